"""The local stack `kpp stack up | down | status` starts for the demo and the tests:
Apache Kafka (single-node KRaft, run with Java 17 from jars resolved from Maven Central)
and VictoriaMetrics (Debian's `victoria-metrics` package), both on 127.0.0.1.

Everything lives under one state folder (default `.kpp/`, env `KPP_STATE_DIR`): jars,
data, logs and PID files. `KAFKA_BOOTSTRAP` and `VM_URL` point the stack at existing
services instead; it then only checks that they answer.
"""
