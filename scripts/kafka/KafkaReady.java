import java.util.Collection;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.ListTopicsOptions;
import org.apache.kafka.common.Node;

/**
 * Readiness probe for scripts/kafka.sh: loops until the broker answers a real
 * metadata round-trip (DescribeCluster + ListTopics via the AdminClient) or the
 * deadline passes.
 *
 * Usage: java -cp "lib/*:." KafkaReady BOOTSTRAP TIMEOUT_SECONDS [PID [CLUSTER_ID]]
 * PID: fail fast when that process exits ("-" or -1 to skip).
 * CLUSTER_ID: only accept a broker reporting that cluster id (guards against
 * another broker answering on the same port).
 * Exit codes: 0 ready, 1 timed out, 2 broker process (PID) died, 3 wrong cluster.
 */
public final class KafkaReady {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: KafkaReady BOOTSTRAP TIMEOUT_SECONDS [PID [CLUSTER_ID]]");
            System.exit(64);
        }
        String bootstrap = args[0];
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[1]));
        long pid = args.length > 2 && !args[2].equals("-") ? Long.parseLong(args[2]) : -1;
        String clusterId = args.length > 3 && !args[3].isEmpty() ? args[3] : null;

        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.CLIENT_ID_CONFIG, "upload-gateway-kafka-ready");
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "5000");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MS_CONFIG, "100");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        props.put(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, "100");
        props.put(AdminClientConfig.RETRY_BACKOFF_MAX_MS_CONFIG, "500");

        String last = "no attempt made";
        try (Admin admin = Admin.create(props)) {
            while (true) {
                if (pid > 0 && !ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false)) {
                    System.err.println("KafkaReady: broker process " + pid + " exited");
                    System.exit(2);
                }
                try {
                    if (clusterId != null) {
                        String actual = admin.describeCluster(new DescribeClusterOptions().timeoutMs(3000))
                                .clusterId().get(4, TimeUnit.SECONDS);
                        if (!clusterId.equals(actual)) {
                            System.err.println("KafkaReady: " + bootstrap + " belongs to cluster " + actual
                                    + ", expected " + clusterId + " (port taken by another broker?)");
                            System.exit(3);
                        }
                    }
                    Collection<Node> nodes = admin.describeCluster(new DescribeClusterOptions().timeoutMs(3000))
                            .nodes().get(4, TimeUnit.SECONDS);
                    Set<String> topics = admin.listTopics(new ListTopicsOptions().timeoutMs(3000).listInternal(true))
                            .names().get(4, TimeUnit.SECONDS);
                    if (!nodes.isEmpty()) {
                        System.err.println("KafkaReady: ready (" + nodes.size() + " broker(s), "
                                + topics.size() + " topic(s))");
                        System.exit(0);
                    }
                    last = "cluster reported no brokers";
                } catch (Exception e) {
                    Throwable c = e.getCause() != null ? e.getCause() : e;
                    last = c.getClass().getSimpleName() + ": " + c.getMessage();
                }
                if (System.nanoTime() >= deadline) {
                    System.err.println("KafkaReady: not ready at " + bootstrap + ": " + last);
                    System.exit(1);
                }
                Thread.sleep(200);
            }
        }
    }
}
