//! API contracts (seed 001): the shapes of answers and errors, idempotent
//! creates.

mod api_contract;
