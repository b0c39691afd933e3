//! Security: who may call a service, what one tenant may see, and what is
//! kept in the clear.

mod access_control;
mod authorization;
mod data_encryption;
mod encryption_everywhere;
mod input_hardening;
mod revocation;
mod service_authentication;
