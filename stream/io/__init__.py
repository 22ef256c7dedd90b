"""Sources and sinks: Kafka in, Redis out, and the instrument's producer."""
