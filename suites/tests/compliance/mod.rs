//! Compliance: PHI across services, PHI protection in what the services
//! keep and log, the audit trail.

mod access_audit;
mod audit_trail;
mod distributed_compliance;
mod phi_across_services;
mod phi_protection;
mod violation_workflow;
