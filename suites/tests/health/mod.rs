//! Health and readiness: `/health` of each service, and `/metrics`.

mod aggregation;
mod endpoints;
