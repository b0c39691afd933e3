//! The six services of the mesh, as one table: each entry a service's
//! name (its token audience and the name in `/health` and logs) and its
//! PostgreSQL schema. A leaf: it depends on nothing else of the crate, so
//! every module may name a service without an import circle. Adding a
//! service is one variant, one [`TABLE`] entry and one module (its routes
//! and migrations, wired in `mesh.rs`).

use std::fmt;

/// One of the mesh's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// The orchestrator in front: intake, visits, the claim saga.
    HealthcareApi,
    /// Eligibility checks, cached in Redis.
    InsuranceVerification,
    /// Claims, validated, with idempotency keys in Redis.
    BillingEngine,
    /// The audit trail, the PHI scanner, violations.
    ComplianceMonitor,
    /// Analytics events and aggregates.
    BusinessIntelligence,
    /// Doctors' preferences by NPI.
    DoctorPersonalization,
}

/// What the mesh knows of one service.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// The service.
    pub service: Service,
    /// Its name (`billing-engine`).
    pub name: &'static str,
    /// Its PostgreSQL schema.
    pub schema: &'static str,
}

/// Every service, the API first, in the enum's order.
pub const TABLE: [Entry; 6] = [
    Entry {
        service: Service::HealthcareApi,
        name: "healthcare-api",
        schema: "api",
    },
    Entry {
        service: Service::InsuranceVerification,
        name: "insurance-verification",
        schema: "insurance",
    },
    Entry {
        service: Service::BillingEngine,
        name: "billing-engine",
        schema: "billing",
    },
    Entry {
        service: Service::ComplianceMonitor,
        name: "compliance-monitor",
        schema: "compliance",
    },
    Entry {
        service: Service::BusinessIntelligence,
        name: "business-intelligence",
        schema: "bi",
    },
    Entry {
        service: Service::DoctorPersonalization,
        name: "doctor-personalization",
        schema: "doctor",
    },
];

impl Service {
    /// All six, the API first.
    pub const ALL: [Service; 6] = [
        TABLE[0].service,
        TABLE[1].service,
        TABLE[2].service,
        TABLE[3].service,
        TABLE[4].service,
        TABLE[5].service,
    ];

    fn entry(self) -> &'static Entry {
        &TABLE[self as usize]
    }

    /// The service's name (`billing-engine`): the token audience and the
    /// name in `/health` and logs.
    pub fn name(self) -> &'static str {
        self.entry().name
    }

    /// Its PostgreSQL schema.
    pub fn schema(self) -> &'static str {
        self.entry().schema
    }

    /// The service of a name.
    pub fn from_name(name: &str) -> Option<Service> {
        TABLE.iter().find(|e| e.name == name).map(|e| e.service)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_the_enums_order() {
        for (i, e) in TABLE.iter().enumerate() {
            assert_eq!(e.service as usize, i, "{}", e.name);
            assert_eq!(Service::from_name(e.name), Some(e.service));
        }
    }
}
