//! Performance: response times and throughput held against the target's
//! SLOs (`[slo]` of the target file; the sandbox's own by default), and
//! the resources the services use under load.

mod concurrent_load;
mod resource_utilization;
mod response_times;
