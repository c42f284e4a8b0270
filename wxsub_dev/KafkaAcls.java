// Creates ACLs through Kafka's own Admin API (kafka-clients, in the project's jars).
// Run with Java's single-file source launcher:
//   java -cp "$KAFKA_HOME/libs/*" wxsub_dev/KafkaAcls.java admin.properties < acls.txt
// Each stdin line: PRINCIPAL RESOURCE_TYPE PATTERN_TYPE NAME OPERATION
//   e.g. "User:wxsub TOPIC PREFIXED wxsub. READ"  or  "User:wxsub CLUSTER LITERAL kafka-cluster IDEMPOTENT_WRITE"
// All are ALLOW rules from any host. Prints the number created; exits 1 with the reason otherwise.
import java.io.BufferedReader;
import java.io.FileReader;
import java.io.InputStreamReader;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class KafkaAcls {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (FileReader in = new FileReader(args[0])) {
            props.load(in);
        }
        List<AclBinding> acls = new ArrayList<>();
        BufferedReader lines = new BufferedReader(new InputStreamReader(System.in));
        for (String line = lines.readLine(); line != null; line = lines.readLine()) {
            line = line.trim();
            if (line.isEmpty() || line.startsWith("#")) continue;
            String[] f = line.split("\\s+");
            if (f.length != 5) throw new IllegalArgumentException("bad ACL line: " + line);
            ResourcePattern pattern = new ResourcePattern(
                ResourceType.valueOf(f[1]), f[3], PatternType.valueOf(f[2]));
            AccessControlEntry entry = new AccessControlEntry(
                f[0], "*", AclOperation.valueOf(f[4]), AclPermissionType.ALLOW);
            acls.add(new AclBinding(pattern, entry));
        }
        try (Admin admin = Admin.create(props)) {
            admin.createAcls(acls).all().get(60, TimeUnit.SECONDS);
        } catch (Exception e) {
            System.err.println("creating ACLs failed: " + e);
            System.exit(1);
        }
        System.out.println(acls.size());
    }
}
