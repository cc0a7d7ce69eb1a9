"""Lineage: the walk from any table state down to the Kafka records behind it (and back up), read
from the bookkeeping every commit already keeps, and OpenLineage run events for every flow."""
