//! Integration: the healthcare API's own endpoints, the calls between
//! services, and whole journeys end to end.

mod concurrency;
mod degradation;
mod end_to_end;
mod healthcare_api;
mod lifecycle;
mod migrations;
mod service_to_service;
