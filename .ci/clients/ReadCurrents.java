// Reads Currents Avro files with the reference Java library and prints the number of records.
// Fails on an empty file, a record without its id, or a file the library cannot read.
import java.io.File;
import org.apache.avro.file.DataFileReader;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;

public class ReadCurrents {
    public static void main(String[] args) throws Exception {
        long total = 0;
        for (String path : args) {
            long n = 0;
            try (DataFileReader<GenericRecord> reader = new DataFileReader<>(new File(path), new GenericDatumReader<GenericRecord>())) {
                for (GenericRecord record : reader) {
                    if (record.getSchema().getField("id") != null && record.get("id") == null) {
                        throw new IllegalStateException("record without id in " + path);
                    }
                    n++;
                }
            }
            if (n == 0) {
                throw new IllegalStateException("empty file " + path);
            }
            total += n;
        }
        System.out.println(total);
    }
}
