// A producing team's service as the CloudEvents Java SDK documents it: a KafkaProducer whose
// value serializer is io.cloudevents.kafka.CloudEventSerializer. Run by
// tests/integration/test_producers.py with the single-file source launcher:
//
//   java -cp '.dev/producers/java/*' tests/producers/CloudEventsProducer.java BOOTSTRAP TOPIC < events
//
// stdin: one JSON object per line, {"encoding": "BINARY" | "STRUCTURED", "key", "id", "source",
// "type", "time", "datacontenttype" (optional), "data", "transaction" (optional: "committed" or
// "aborted": the record is sent in a transaction of its own, by a producer with a
// transactional.id, which then commits or aborts it)}. All records go out from one JVM, because
// its start is what costs.
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.cloudevents.CloudEvent;
import io.cloudevents.core.builder.CloudEventBuilder;
import io.cloudevents.core.message.Encoding;
import io.cloudevents.jackson.JsonFormat;
import io.cloudevents.kafka.CloudEventSerializer;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.time.OffsetDateTime;
import java.util.EnumMap;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;

public class CloudEventsProducer {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args[1];
        ObjectMapper mapper = new ObjectMapper();
        // The encoding is a serializer setting, so each mode needs a producer of its own.
        Map<Encoding, KafkaProducer<String, CloudEvent>> producers = new EnumMap<>(Encoding.class);
        Map<Encoding, KafkaProducer<String, CloudEvent>> transactional =
                new EnumMap<>(Encoding.class);
        for (Encoding encoding : new Encoding[] {Encoding.BINARY, Encoding.STRUCTURED}) {
            producers.put(encoding, producer(bootstrap, encoding, null));
            KafkaProducer<String, CloudEvent> inTransactions =
                    producer(bootstrap, encoding, "cleanup-test-" + UUID.randomUUID());
            inTransactions.initTransactions();
            transactional.put(encoding, inTransactions);
        }
        try (BufferedReader in = new BufferedReader(
                new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            String line;
            while ((line = in.readLine()) != null) {
                if (line.isBlank()) {
                    continue;
                }
                JsonNode spec = mapper.readTree(line);
                Encoding encoding = Encoding.valueOf(spec.get("encoding").asText());
                ProducerRecord<String, CloudEvent> record =
                        new ProducerRecord<>(topic, spec.get("key").asText(), event(spec, mapper));
                JsonNode transaction = spec.get("transaction");
                if (transaction == null || transaction.asText().isEmpty()) {
                    // get(): a failed send must fail the test, not vanish in a callback.
                    producers.get(encoding).send(record).get();
                    continue;
                }
                KafkaProducer<String, CloudEvent> producer = transactional.get(encoding);
                producer.beginTransaction();
                producer.send(record).get();
                if (transaction.asText().equals("committed")) {
                    producer.commitTransaction();
                } else {
                    producer.abortTransaction();
                }
            }
        } finally {
            for (KafkaProducer<String, CloudEvent> producer : producers.values()) {
                producer.close();
            }
            for (KafkaProducer<String, CloudEvent> producer : transactional.values()) {
                producer.close();
            }
        }
    }

    static KafkaProducer<String, CloudEvent> producer(
            String bootstrap, Encoding encoding, String transactionalId) {
        Properties props = new Properties();
        if (transactionalId != null) {
            props.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, transactionalId);
        }
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, CloudEventSerializer.class);
        props.put(CloudEventSerializer.ENCODING_CONFIG, encoding);
        props.put(CloudEventSerializer.EVENT_FORMAT_CONFIG, JsonFormat.CONTENT_TYPE);
        return new KafkaProducer<>(props);
    }

    static CloudEvent event(JsonNode spec, ObjectMapper mapper) throws Exception {
        byte[] data = mapper.writeValueAsBytes(spec.get("data"));
        CloudEventBuilder builder = CloudEventBuilder.v1()
                .withId(spec.get("id").asText())
                .withSource(URI.create(spec.get("source").asText()))
                .withType(spec.get("type").asText())
                .withTime(OffsetDateTime.parse(spec.get("time").asText()))
                .withExtension("partitionkey", spec.get("key").asText());
        JsonNode contentType = spec.get("datacontenttype");
        if (contentType == null || contentType.isNull()) {
            builder.withData(data);
        } else {
            builder.withData(contentType.asText(), data);
        }
        return builder.build();
    }
}
