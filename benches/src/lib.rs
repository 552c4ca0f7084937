//! ngsd-benches: shared helpers for the bench targets
