// pgjdbc through pgssl's transaction pooling (tests/it/transaction_pool.rs). Four connections open at
// once; with prepareThreshold=1 every statement is server-prepared from its first run (S_1, S_2...
// on every connection, and the odd connections prepare one more first, so the same names mean
// different statements). Each connection batch-inserts 50 rows in a transaction, checked from
// inside it and from another connection meanwhile; then prepared selects run on every connection in
// turn. Prints "jdbc ok: connections=N backends=B rows=R", or what failed and exits 1.
// Run with the single-file source launcher:
//   java -cp /usr/share/java/postgresql.jar JdbcTransactionPool.java URL
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;

public class JdbcTransactionPool {
    static final int CONNECTIONS = 4;
    static final int ROWS = 50;

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    static int pid(Connection c) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement("SELECT pg_backend_pid()");
             ResultSet r = ps.executeQuery()) {
            r.next();
            return r.getInt(1);
        }
    }

    static long count(Connection c, int conn) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement("SELECT count(*) FROM jdbc_items WHERE conn = ?")) {
            ps.setInt(1, conn);
            try (ResultSet r = ps.executeQuery()) {
                r.next();
                return r.getLong(1);
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        List<Connection> cs = new ArrayList<>();
        Set<Integer> pids = new TreeSet<>();
        try {
            for (int i = 0; i < CONNECTIONS; i++) {
                cs.add(DriverManager.getConnection(url));
            }
            for (int i = 1; i < CONNECTIONS; i += 2) {
                try (PreparedStatement ps = cs.get(i).prepareStatement("SELECT ?::int + 1")) {
                    ps.setInt(1, i);
                    try (ResultSet r = ps.executeQuery()) {
                        r.next();
                        check(r.getInt(1) == i + 1, "warm-up on connection " + i);
                    }
                }
            }
            for (int i = 0; i < CONNECTIONS; i++) {
                Connection c = cs.get(i);
                Connection other = cs.get((i + 1) % CONNECTIONS);
                c.setAutoCommit(false);
                try (PreparedStatement ins = c.prepareStatement(
                        "INSERT INTO jdbc_items (conn, n, label) VALUES (?, ?, ?)")) {
                    for (int k = 0; k < ROWS; k++) {
                        ins.setInt(1, i);
                        ins.setInt(2, k);
                        ins.setString(3, "c" + i + "-" + k);
                        ins.addBatch();
                    }
                    int[] counts = ins.executeBatch();
                    check(counts.length == ROWS, "batch of " + counts.length);
                    for (int n : counts) {
                        check(n == 1 || n == java.sql.Statement.SUCCESS_NO_INFO, "a batch insert counted " + n);
                    }
                }
                int inside = pid(c);
                check(count(c, i) == ROWS, "connection " + i + " sees its own rows in its transaction");
                // Another connection meanwhile: another backend, outside the transaction.
                int elsewhere = pid(other);
                check(elsewhere != inside, "connection " + ((i + 1) % CONNECTIONS)
                        + " ran on the backend of connection " + i + "'s open transaction");
                check(count(other, i) == 0, "uncommitted rows of connection " + i + " seen elsewhere");
                check(pid(c) == inside, "connection " + i + "'s transaction moved backends");
                c.commit();
                c.setAutoCommit(true);
                check(count(other, i) == ROWS, "committed rows of connection " + i + " not seen");
                pids.add(inside);
                pids.add(elsewhere);
            }
            for (int round = 0; round < 5; round++) {
                for (int i = 0; i < CONNECTIONS; i++) {
                    int of = (i + round) % CONNECTIONS;
                    try (PreparedStatement ps = cs.get(i).prepareStatement(
                            "SELECT count(*), sum(n), min(label), pg_backend_pid() FROM jdbc_items WHERE conn = ?")) {
                        ps.setInt(1, of);
                        try (ResultSet r = ps.executeQuery()) {
                            r.next();
                            String got = r.getLong(1) + " " + r.getLong(2) + " " + r.getString(3);
                            String want = ROWS + " " + (ROWS * (ROWS - 1) / 2) + " c" + of + "-0";
                            check(got.equals(want), "connection " + i + " round " + round + ": " + got);
                            pids.add(r.getInt(4));
                        }
                    }
                }
            }
            long rows = 0;
            for (int i = 0; i < CONNECTIONS; i++) {
                rows += count(cs.get(i), i);
            }
            System.out.println("jdbc ok: connections=" + CONNECTIONS + " backends=" + pids.size() + " rows=" + rows);
        } catch (SQLException e) {
            System.out.println("SQLSTATE " + e.getSQLState() + ": " + e.getMessage());
            e.printStackTrace();
            System.exit(1);
        } catch (AssertionError e) {
            System.out.println("wrong answer: " + e.getMessage());
            System.exit(1);
        } finally {
            for (Connection c : cs) {
                try {
                    c.close();
                } catch (SQLException ignored) {
                    // Closing is not what is tested.
                }
            }
        }
    }
}
