//! Health and readiness: `/health` of each service, and `/metrics`.

mod endpoints;
