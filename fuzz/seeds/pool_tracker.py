#!/usr/bin/env python3
"""Writes the seed inputs of the pool_tracker and pool_sql fuzz targets: realistic client sessions
(named Parse/Bind/Execute/Sync and their answers, an error mid-batch, psycopg's DEALLOCATE ALL through
the extended protocol, COPY, LISTEN, SET search_path, eviction past max_prepared, two clients sharing
backends) in the byte form fuzz_targets/pool_tracker.rs reads, and statement texts for pool_sql.
Re-run after changing how the target reads its bytes (its tables are mirrored below), then
`cargo fuzz cmin`.

    fuzz/seeds/pool_tracker.py             # writes fuzz/corpus/pool_tracker/seed-* and pool_sql/seed-*
    fuzz/seeds/pool_tracker.py --findings  # writes fuzz/seeds/pool_tracker-findings/* (see findings())
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "..", "corpus")

# Mirrors of the target's tables.
TEXTS = [
    "SELECT 1", "SELECT $1::int", "SELECT nope", "SELECT 1/0", "BEGIN", "COMMIT", "ROLLBACK",
    "SET search_path TO app", "SET search_path TO other", "SET statement_timeout = 5",
    "RESET search_path", "RESET ALL", "SET TimeZone TO 'Asia/Tokyo'", "SET application_name = 'x'",
    "DISCARD ALL", "DEALLOCATE ALL", "DEALLOCATE s1", "DEALLOCATE _pg3_0", "LISTEN chan",
    "PREPARE p AS SELECT 1", "DEALLOCATE p", "SET work_mem TO '8MB'", "SELECT pg_advisory_lock(1)",
    "", "COPY t FROM STDIN",
]
ALONE = {"DEALLOCATE s1", "DEALLOCATE _pg3_0", "COPY t FROM STDIN"}
STATEMENTS = ["", "s1", "s2", "_pg3_0"]
PORTALS = ["", "p1"]
APPLICATION_NAMES = ["", "psql", "it's", "a\\b"]


class Session:
    """Model-mode input: header, then operations of client 0 or 1."""

    def __init__(self, max_prepared=3, refuse=False, pg18=False, apps=("psql", "")):
        self.b = bytearray([1, (max_prepared - 1) | (4 if refuse else 0) | (8 if pg18 else 0)])
        self.b += bytes(APPLICATION_NAMES.index(a) for a in apps)
        self.holds = [False, False]

    def _send(self, c, message, backend=0):
        self.b.append((c << 7) | 0)
        self.b += message
        if not self.holds[c]:
            self.b.append(backend)
            self.holds[c] = True
        return self

    def query(self, c, *texts, backend=0):
        first = TEXTS.index(texts[0])
        m = bytes([0, first])
        if texts[0] not in ALONE:
            m += bytes([len(texts) - 1]) + bytes(TEXTS.index(t) for t in texts[1:])
        return self._send(c, m, backend)

    def parse(self, c, name, text, typed=False, backend=0):
        m = bytes([2, STATEMENTS.index(name), TEXTS.index(text), 1 if typed else 0])
        return self._send(c, m, backend)

    def bind(self, c, statement, portal="", params=0, backend=0):
        m = bytes([4, PORTALS.index(portal), STATEMENTS.index(statement), params])
        return self._send(c, m, backend)

    def describe(self, c, what, name, backend=0):
        index = STATEMENTS.index(name) if what == "S" else PORTALS.index(name)
        return self._send(c, bytes([6, 0 if what == "S" else 1, index]), backend)

    def execute(self, c, portal="", backend=0):
        return self._send(c, bytes([7, PORTALS.index(portal)]), backend)

    def sync(self, c, backend=0):
        return self._send(c, bytes([9]), backend)

    def close(self, c, what, name, backend=0):
        index = STATEMENTS.index(name) if what == "S" else PORTALS.index(name)
        return self._send(c, bytes([11, 0 if what == "S" else 1, index]), backend)

    def flush(self, c, backend=0):
        return self._send(c, bytes([12]), backend)

    def copy(self, c, which):
        return self._send(c, bytes([13, "dcf".index(which)]))

    def deliver(self, c, n=None):
        if n is None:
            self.b.append((c << 7) | 13)
        else:
            self.b += bytes([(c << 7) | 10, n - 1])
        return self

    def release(self, c):
        self.b.append((c << 7) | 14)
        self.holds[c] = False
        return self

    def leave(self, c, app="psql"):
        self.b += bytes([(c << 7) | 15, APPLICATION_NAMES.index(app)])
        self.holds[c] = False
        return self

    def extended(self, c, name, text, params=0, backend=0):
        """Parse, Bind, Describe, Execute, Sync, as libpq's PQexecParams and PQexecPrepared send."""
        self.parse(c, name, text, typed=params > 0, backend=backend)
        return self.bind(c, name, params=params).describe(c, "P", "").execute(c).sync(c)


def model_seeds():
    s = {}
    # Named statements, their answers, and the client moving to the other backend and back.
    x = Session()
    x.extended(0, "s1", "SELECT $1::int", params=1).deliver(0).release(0)
    x.bind(0, "s1", params=1, backend=1).execute(0).sync(0).deliver(0).release(0)
    x.extended(1, "s2", "SELECT $1::int", params=1).deliver(1).release(1)
    x.close(1, "S", "s2", backend=1).sync(1).deliver(1).release(1)
    s["named"] = x
    # An error mid-batch: what follows it is skipped to the Sync, the batch's statements undone.
    x = Session()
    x.parse(0, "s1", "SELECT 1").bind(0, "s1").execute(0)
    x.parse(0, "s2", "SELECT nope").bind(0, "s2").execute(0).sync(0)
    x.deliver(0, 2).deliver(0).release(0)
    x.parse(0, "s2", "SELECT 1/0").bind(0, "s2").execute(0).sync(0).deliver(0).release(0)
    s["error_mid_batch"] = x
    # psycopg 3: prepared statements _pg3_n, and DEALLOCATE ALL after a rollback, extended.
    x = Session()
    x.parse(0, "_pg3_0", "SELECT $1::int", typed=True).sync(0).deliver(0).release(0)
    x.query(0, "BEGIN").deliver(0)
    x.bind(0, "_pg3_0", params=1).execute(0).sync(0).query(0, "ROLLBACK").deliver(0).release(0)
    x.parse(0, "", "DEALLOCATE ALL").bind(0, "").describe(0, "P", "").execute(0).sync(0)
    x.deliver(0).release(0)
    x.parse(0, "_pg3_0", "SELECT $1::int", typed=True).sync(0).deliver(0).release(0)
    s["psycopg_deallocate_all"] = x
    # COPY FROM STDIN in a simple query, and one that fails.
    x = Session()
    x.query(0, "COPY t FROM STDIN").deliver(0).copy(0, "d").copy(0, "d").copy(0, "c")
    x.deliver(0).release(0)
    x.query(0, "COPY t FROM STDIN").copy(0, "d").copy(0, "f").deliver(0).release(0)
    s["copy"] = x
    # LISTEN pins the backend; refused, it is an error the server raises.
    x = Session()
    x.query(0, "SET search_path TO app").deliver(0).release(0)
    x.query(0, "LISTEN chan").deliver(0).query(0, "SELECT 1").deliver(0).leave(0)
    x.query(1, "SELECT 1", backend=1).deliver(1).release(1)
    s["listen_pins"] = x
    x = Session(refuse=True)
    x.query(0, "LISTEN chan").deliver(0).release(0)
    x.extended(0, "", "SELECT pg_advisory_lock(1)").deliver(0).release(0)
    s["listen_refused"] = x
    # SET search_path carried to the other backend, reset on the first for the next client.
    x = Session(pg18=False, apps=("it's", "a\\b"))
    x.query(0, "SET search_path TO app", "SET statement_timeout = 5").deliver(0).release(0)
    x.query(0, "SELECT 1", backend=1).deliver(0).release(0)
    x.query(1, "SELECT 1", backend=0).deliver(1).release(1)
    x.query(0, "BEGIN").query(0, "SET search_path TO other").query(0, "ROLLBACK").deliver(0)
    x.release(0)
    x.query(0, "RESET ALL").deliver(0).release(0)
    s["set_search_path"] = x
    x = Session(pg18=True, apps=("psql", "psql"))
    x.query(0, "SET TimeZone TO 'Asia/Tokyo'", "SET search_path TO app").deliver(0).release(0)
    x.query(0, "SELECT 1", backend=1).deliver(0).release(0)
    x.query(1, "DISCARD ALL", backend=0).deliver(1).release(1)
    s["reported_parameters"] = x
    # Past max_prepared = 1, the least recently used is closed; it comes back on use.
    x = Session(max_prepared=1)
    x.parse(0, "s1", "SELECT 1").sync(0).deliver(0).release(0)
    x.parse(0, "s2", "SELECT $1::int").sync(0).deliver(0).release(0)
    x.bind(0, "s1").execute(0).bind(0, "s2", params=1).execute(0).sync(0).deliver(0).release(0)
    x.extended(1, "s1", "SELECT 1", backend=0).deliver(1).release(1)
    s["eviction"] = x
    # Two clients pipelining on two backends, answers read in pieces.
    x = Session(max_prepared=2)
    x.parse(0, "s1", "SELECT 1").bind(0, "s1").execute(0).sync(0)
    x.parse(1, "s1", "SELECT 1", backend=1).bind(1, "s1").execute(1).sync(1)
    x.deliver(0, 1).deliver(1, 2).query(0, "SELECT 1")
    x.deliver(0).deliver(1).release(0).release(1)
    x.query(0, "BEGIN", "SELECT 1").deliver(0).extended(0, "s2", "SELECT 1").deliver(0)
    x.query(0, "COMMIT").deliver(0).release(0)
    s["pipelines"] = x
    # A transaction's SQL PREPARE and DEALLOCATE ALL: pinned, the server drops them all.
    x = Session()
    x.parse(0, "s1", "SELECT 1").sync(0).deliver(0)
    x.query(0, "PREPARE p AS SELECT 1").deliver(0).query(0, "DEALLOCATE ALL").deliver(0)
    x.bind(0, "s1").execute(0).sync(0).deliver(0).leave(0)
    x.query(1, "DEALLOCATE s1").deliver(1).release(1)
    s["sql_prepare"] = x
    return {k: bytes(v.b) for k, v in s.items()}


def raw_seeds():
    """Raw-mode input: op bytes (0-3 client, 4-6 server, 7 hand over) with kinds and bodies."""

    def client(kind, body):
        return bytes([0, 1, CLIENT_KINDS.index(kind), len(body)]) + body

    def server(kind, body):
        b = bytes([4, SERVER_KINDS.index(kind), 0x80, len(body)]) + body
        # Captured kinds read one more byte: 0xff would pass them on as too large to capture.
        return b + (bytes([0]) if kind in b"SZEC" else b"")

    def parse(name, sql):
        return name + b"\0" + sql + b"\0\0\0"

    s = {}
    s["raw_named"] = bytes([0, 2, 0]) + b"".join([
        client(b"P", parse(b"s1", b"select 1")), client(b"B", b"\0s1\0\0\0\0\0\0\0"),
        client(b"E", b"\0\0\0\0\0"), client(b"S", b""),
        server(b"1", b""), server(b"2", b""), server(b"C", b"SELECT 1\0"), server(b"Z", b"I"),
        bytes([7, 1]),
        client(b"B", b"\0s1\0\0\0\0\0\0\0"), client(b"S", b""),
        server(b"1", b""), server(b"2", b""), server(b"Z", b"I"),
    ])
    s["raw_error"] = bytes([0, 0, 1]) + b"".join([
        client(b"P", parse(b"bad", b"select nope")), client(b"B", b"\0bad\0\0\0\0\0\0\0"),
        client(b"S", b""),
        server(b"E", b"SERROR\0C42703\0Mcolumn nope\0\0"), server(b"Z", b"I"),
        client(b"Q", b"DISCARD ALL\0"), server(b"C", b"DISCARD ALL\0"), server(b"Z", b"I"),
    ])
    return s


CLIENT_KINDS = b"QPBDECSHFdcfX"
SERVER_KINDS = b"123ntTDCIsZESNAGHdcWV"

SQL = [
    "SET search_path TO app, public", "set session Search_Path='a b'; ", "SET SCHEMA 'app'",
    "SET TIME ZONE 'UTC'", "SET LOCAL search_path TO x", "RESET ALL", "DISCARD ALL",
    "DEALLOCATE PREPARE \"P1\"", "LISTEN \"Chan\"", "select pg_try_advisory_lock_shared(1)",
    "CREATE OR REPLACE TEMP VIEW v AS SELECT 1", "DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT 1",
    "PREPARE p AS SELECT 1; PREPARE TRANSACTION 'x'", "SET SESSION AUTHORIZATION other",
    "SELECT $q$; LISTEN x $q$; /* /* LISTEN */ */ LISTEN y -- z\nSET work_mem = '8MB'",
    "SET statement_timeout TO 5; RESET statement_timeout; DEALLOCATE ALL",
]


def findings():
    """Inputs on which the tracker broke an invariant when the target was written (each named for
    what it shows); not in the corpus, which must pass. Turn each into a regression test when fixing
    it, then move it into fuzz/corpus/pool_tracker/."""
    f = {}
    # A COPY through the extended protocol, as tokio-postgres's copy_in sends it: Bind, Execute,
    # Sync, CopyData, CopyDone, Sync. The server ignores a Sync during COPY: one ReadyForQuery for
    # two Syncs, and pgssl awaits the second forever.
    x = Session()
    x.parse(0, "", "COPY t FROM STDIN").bind(0, "").execute(0).sync(0)
    x.copy(0, "d").copy(0, "c").sync(0).deliver(0)
    f["stuck_copy_extended_sync"] = x
    # A Query while the server skips to Sync after an error is ignored by it (no ReadyForQuery).
    x = Session()
    x.parse(0, "s1", "SELECT nope").query(0, "SELECT 1").sync(0).deliver(0)
    f["stuck_query_while_skipping"] = x
    # A Query during COPY FROM STDIN is refused by the server (08P01) and consumed with the COPY.
    x = Session()
    x.query(0, "COPY t FROM STDIN").query(0, "SELECT 1").copy(0, "c").deliver(0)
    f["stuck_query_during_copy"] = x
    # The Close of an evicted statement skipped after an error earlier in the batch: pgssl forgets a
    # statement the backend keeps; preparing its text there again fails with 42P05.
    x = Session(max_prepared=1)
    x.parse(0, "s1", "SELECT 1").sync(0).deliver(0).release(0)
    x.bind(0, "s2").parse(0, "s2", "SELECT $1::int").sync(0).deliver(0).release(0)
    x.parse(0, "_pg3_0", "SELECT 1").sync(0).deliver(0)
    f["eviction_close_skipped"] = x
    # pgssl's own ParseComplete while the server skips to Sync: an answer PostgreSQL never gives.
    x = Session()
    x.parse(0, "s1", "SELECT 1").sync(0).deliver(0).release(0)
    x.parse(0, "s2", "SELECT nope").deliver(0).parse(0, "_pg3_0", "SELECT 1").sync(0).deliver(0)
    f["fake_answer_while_skipping"] = x
    # ... and in a failed transaction block, where PostgreSQL answers 25P02.
    x = Session()
    x.parse(0, "s1", "SELECT 1").sync(0).deliver(0).release(0)
    x.query(0, "BEGIN").query(0, "SELECT nope").parse(0, "s2", "SELECT 1").sync(0).deliver(0)
    f["fake_answer_in_failed_transaction"] = x
    # A pipelined earlier error clears the SET of a later Query that succeeds.
    x = Session()
    x.query(0, "SELECT nope").query(0, "SET search_path TO app").deliver(0)
    f["set_lost_to_earlier_error"] = x
    # An earlier ReadyForQuery commits the SET of a later pipelined Query that fails.
    x = Session()
    x.query(0, "SELECT 1").query(0, "SET statement_timeout = 5", "SELECT nope").deliver(0)
    f["set_kept_from_failed_query"] = x
    # ROLLBACK then another statement in one Query: the rolled-back SET is taken as committed.
    x = Session()
    x.query(0, "BEGIN").deliver(0).query(0, "SET search_path TO app").deliver(0)
    x.query(0, "ROLLBACK", "SELECT 1").deliver(0)
    f["set_kept_after_rollback_then_select"] = x
    # SET; COMMIT; failing statement in one Query: the committed SET is dropped.
    x = Session()
    x.query(0, "SET search_path TO app", "COMMIT", "SELECT nope").deliver(0)
    f["set_lost_after_commit_then_error"] = x
    # on_pin = refuse: refusing a statement clears the SET of an earlier pipelined Query.
    x = Session(refuse=True)
    x.query(0, "SET search_path TO app").query(0, "LISTEN chan").deliver(0)
    f["set_lost_to_refusal"] = x
    # A SET prepared (Parse) is taken as run, though never executed.
    x = Session()
    x.parse(0, "s1", "SET statement_timeout = 5").sync(0).deliver(0)
    f["set_taken_at_parse"] = x
    # ... and one executed again through its prepared statement (no Parse) is not seen.
    x = Session()
    x.parse(0, "s1", "SET search_path TO app").bind(0, "s1").execute(0).sync(0).deliver(0)
    x.query(0, "RESET ALL").deliver(0).bind(0, "s1").execute(0).sync(0).deliver(0)
    f["set_missed_on_execute"] = x
    # A pipelined Parse after DISCARD ALL: the DISCARD ALL's answer makes pgssl forget it.
    x = Session()
    x.query(0, "DISCARD ALL").parse(0, "s1", "SELECT 1").sync(0).deliver(0)
    f["statement_forgotten_after_discard_all"] = x
    # A statement used right after a pipelined DEALLOCATE of it still binds.
    x = Session()
    x.parse(0, "s1", "SELECT 1").query(0, "DEALLOCATE s1").bind(0, "s1").sync(0).deliver(0)
    f["statement_used_after_deallocate"] = x
    return {k: bytes(v.b) for k, v in f.items()}


def main():
    if sys.argv[1:] == ["--findings"]:
        out = os.path.join(HERE, "pool_tracker-findings")
        os.makedirs(out, exist_ok=True)
        for name, data in findings().items():
            with open(os.path.join(out, name), "wb") as f:
                f.write(data)
        # sql::effects panics on a SET whose value starts with a multi-byte character.
        with open(os.path.join(out, "pool_sql-set_value_not_char_boundary"), "wb") as f:
            f.write(bytes([0]) + "SET a xé".encode())
        return
    for target, seeds in (("pool_tracker", {**model_seeds(), **raw_seeds()}),
                          ("pool_sql", {f"{i:02}": bytes([7]) + t.encode() for i, t in enumerate(SQL)})):
        out = os.path.join(CORPUS, target)
        os.makedirs(out, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(out, f"seed-{name}"), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
