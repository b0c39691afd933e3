//! Performance: response times and throughput held against the target's
//! SLOs (`[slo]` of the target file; the sandbox's own by default), and
//! the resources the services use under load. The tests that put load
//! on the target are `exclusive`: they measure alone, after the others (a
//! figure taken while the rest of the suites run measures the rest too).

mod concurrent_load;
mod endpoints;
mod resource_utilization;
mod response_times;
