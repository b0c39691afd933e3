//! Security: who may call a service, what one tenant may see, and what is
//! kept in the clear.

mod access_control;
mod data_encryption;
mod service_authentication;
