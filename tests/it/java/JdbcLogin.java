// pgjdbc against pgssl: connects with the URL given, runs one query and prints its first column,
// or prints the SQLSTATE and message of the failure and exits 1. Run with the single-file source
// launcher: java -cp /usr/share/java/postgresql.jar JdbcLogin.java URL SQL
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;

public class JdbcLogin {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0]);
             ResultSet r = c.createStatement().executeQuery(args[1])) {
            r.next();
            System.out.println(r.getString(1));
        } catch (SQLException e) {
            System.out.println("SQLSTATE " + e.getSQLState() + ": " + e.getMessage());
            System.exit(1);
        }
    }
}
