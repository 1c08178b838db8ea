"""psycopg 3 through pgssl's transaction pooling (tests/it/transaction_pool.rs).

Six connections, all open at once, each in its own thread: every statement prepared on the server
(prepare_threshold=0 and prepare=True: psycopg's names _pg3_0, _pg3_1... mean different statements on
different connections), pipeline mode (several statements, then several Syncs in one pipeline),
transactions, and a rollback, after which psycopg sends DEALLOCATE ALL and prepares again.

Usage: python3 psycopg_transaction_pool.py CONNINFO   (the password in PGPASSWORD)
Prints "psycopg ok: connections=N backends=B rows=R" and exits 0, or prints what failed and exits 1.
"""

import sys
import threading
import traceback

import psycopg

CONNECTIONS = 6
ROWS = 20
DOUBLE = "SELECT %s::int * 2, pg_backend_pid()"
SUFFIX = "SELECT %s::text || '!', pg_backend_pid()"
COUNT = "SELECT count(*), sum(n) FROM psycopg_items WHERE conn = %s"


def run(conn, i, pids):
    """One connection's work; raises AssertionError on a wrong answer."""
    # Prepared in another order on every other connection.
    order = [DOUBLE, SUFFIX] if i % 2 == 0 else [SUFFIX, DOUBLE]
    for rnd in range(5):
        for query in order:
            v = i * 100 + rnd
            if query is DOUBLE:
                row = conn.execute(query, (v,), prepare=True).fetchone()
                assert row[0] == 2 * v, (i, query, row)
            else:
                row = conn.execute(query, (str(v),), prepare=True).fetchone()
                assert row[0] == f"{v}!", (i, query, row)
            pids.add(row[1])

    # A pipeline: half the inserts, a Sync, the other half and a count, one more Sync.
    insert = "INSERT INTO psycopg_items (conn, n) VALUES (%s, %s)"
    with conn.pipeline() as pipeline:
        for n in range(ROWS // 2):
            conn.execute(insert, (i, n), prepare=True)
        pipeline.sync()
        for n in range(ROWS // 2, ROWS):
            conn.execute(insert, (i, n), prepare=True)
        count = conn.execute(COUNT, (i,), prepare=True)
        pipeline.sync()
        row = count.fetchone()
    assert row == (ROWS, ROWS * (ROWS - 1) // 2), (i, row)

    # A transaction: its statements on one backend, its own rows seen.
    with conn.transaction():
        first = conn.execute("SELECT pg_backend_pid()", prepare=True).fetchone()[0]
        row = conn.execute(COUNT, (i,), prepare=True).fetchone()
        again = conn.execute("SELECT pg_backend_pid()", prepare=True).fetchone()[0]
    assert first == again, (i, "a transaction moved backends", first, again)
    assert row == (ROWS, ROWS * (ROWS - 1) // 2), (i, row)
    pids.add(first)

    # A transaction in a pipeline.
    with conn.pipeline(), conn.transaction():
        here = conn.execute("SELECT pg_backend_pid()", prepare=True)
        double = conn.execute(DOUBLE, (i,), prepare=True)
        first = here.fetchone()[0]
        row = double.fetchone()
    assert row[0] == 2 * i and row[1] == first, (i, row, first)

    # A rollback: psycopg forgets its statements and sends DEALLOCATE ALL; the next ones are
    # prepared again, under names it used before.
    try:
        with conn.transaction():
            conn.execute(insert, (i, 999), prepare=True)
            raise psycopg.Rollback()
    except psycopg.Rollback:
        pass
    for rnd in range(3):
        v = i * 1000 + rnd
        row = conn.execute(DOUBLE, (v,), prepare=True).fetchone()
        assert row[0] == 2 * v, (i, "after DEALLOCATE ALL", row)
        row = conn.execute(COUNT, (i,), prepare=True).fetchone()
        assert row == (ROWS, ROWS * (ROWS - 1) // 2), (i, "the rolled back row is there", row)
        pids.add(conn.execute("SELECT pg_backend_pid()", prepare=True).fetchone()[0])


def main():
    conninfo = sys.argv[1]
    pids = set()
    errors = []
    lock = threading.Lock()
    connected = threading.Barrier(CONNECTIONS)

    def worker(i):
        try:
            with psycopg.connect(conninfo, prepare_threshold=0, autocommit=True) as conn:
                # Every connection open before any works: they share the backends.
                connected.wait(timeout=60)
                mine = set()
                run(conn, i, mine)
                with lock:
                    pids.update(mine)
        except BaseException:  # noqa: B036 - report everything, including a broken barrier
            with lock:
                errors.append(f"connection {i}:\n{traceback.format_exc()}")
            connected.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(1)
    with psycopg.connect(conninfo, prepare_threshold=0, autocommit=True) as conn:
        rows = conn.execute("SELECT count(*) FROM psycopg_items", prepare=True).fetchone()[0]
    print(f"psycopg ok: connections={CONNECTIONS} backends={len(pids)} rows={rows}")


if __name__ == "__main__":
    main()
