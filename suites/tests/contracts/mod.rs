//! API contracts (seed 001): the shapes of answers and errors, idempotent
//! creates, and each service's OpenAPI document (served, held to v1, and
//! checked against every answer the suites receive).

mod api_contract;
mod openapi;
