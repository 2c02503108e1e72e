// A minimal JSch (com.jcraft.jsch, Debian libjsch-java) SFTP uploader, driven by tests/sftp.rs.
//
//   java -cp jsch.jar:<classes> Upload <host> <port> <user> <private key> <local file> <remote name>
//
// Public-key auth only, no known_hosts check. Uploads with ChannelSftp.put (OPEN WRITE|CREAT|TRUNC,
// pipelined WRITEs, CLOSE), then STATs the remote name and prints what it learned. Exit status 0
// only when everything succeeded; any exception is printed and gives exit status 1.

import com.jcraft.jsch.ChannelSftp;
import com.jcraft.jsch.JSch;
import com.jcraft.jsch.Session;
import com.jcraft.jsch.SftpATTRS;
import java.io.File;
import java.util.Properties;

public class Upload {
    public static void main(String[] args) {
        if (args.length != 6) {
            System.err.println("usage: Upload host port user keyfile localfile remotename");
            System.exit(2);
        }
        Session session = null;
        try {
            JSch jsch = new JSch();
            jsch.addIdentity(args[3]);
            session = jsch.getSession(args[2], args[0], Integer.parseInt(args[1]));
            Properties config = new Properties();
            config.put("StrictHostKeyChecking", "no");
            config.put("PreferredAuthentications", "publickey");
            session.setConfig(config);
            session.setTimeout(60000);
            session.connect(30000);
            System.out.println("server-version: " + session.getServerVersion());
            System.out.println("host-key-type: " + session.getHostKey().getType());
            System.out.println("cipher: " + session.getConfig("cipher.c2s"));

            ChannelSftp sftp = (ChannelSftp) session.openChannel("sftp");
            sftp.connect(30000);
            System.out.println("sftp-server-version: " + sftp.getServerVersion());
            System.out.println("home: " + sftp.getHome());

            sftp.put(args[4], args[5]);
            SftpATTRS st = sftp.stat(args[5]);
            long local = new File(args[4]).length();
            System.out.println("remote-size: " + st.getSize());
            if (st.getSize() != local) {
                System.err.println("size mismatch: local " + local + ", remote " + st.getSize());
                System.exit(1);
            }
            sftp.disconnect();
            session.disconnect();
            System.out.println("done");
            System.exit(0);
        } catch (Exception e) {
            e.printStackTrace();
            if (session != null) {
                session.disconnect();
            }
            System.exit(1);
        }
    }
}
