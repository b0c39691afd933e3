//! Configuration (seed 001): what the target declares agrees with what the
//! services are and how they call each other.

mod consistency;
mod hot_reload;
