#!/bin/sh
# Fresh random secrets for compose.yaml:   sh deploy/make-env.sh > .env
#
# Hex only, so each value is safe inside an mqtt:// or influxdb:// URL. .env is git-ignored:
# no secret belongs in the repository (RELIABILITY.md S1). docs/operations.md says how to
# replace the InfluxDB admin token of the cloud and the dashboard by scoped tokens.
set -eu
secret() { openssl rand -hex 24; }
for name in MQTT_PASSWORD_SIM MQTT_PASSWORD_EDGE_FARM MQTT_PASSWORD_EDGE_RETAIL \
    MQTT_PASSWORD_EDGE_CITY MQTT_PASSWORD_CLOUD_1 MQTT_PASSWORD_ANALYST_1 MQTT_PASSWORD_DASHBOARD \
    MQTT_PASSWORD_MONITOR INFLUXDB_ADMIN_PASSWORD INFLUXDB_ADMIN_TOKEN; do
    echo "$name=$(secret)"
done
echo "# scoped InfluxDB tokens (docs/operations.md); empty means the admin token"
echo "INFLUXDB_CLOUD_TOKEN="
echo "INFLUXDB_DASHBOARD_TOKEN="
