//! Encryption in transit: a certificate authority and a loopback server
//! certificate made at start (`rcgen`), served by every service (rustls),
//! trusted by every client of the mesh.
//!
//! `sandbox up --tls` writes the CA next to the target file
//! (`tls.ca_file`), so `curl --cacert` and the suites trust it; the
//! services' own calls to each other go over TLS with the same roots. A
//! plain-HTTP request to a TLS port fails its handshake and is closed.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why TLS material could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Generating a key or a certificate failed.
    #[error("making the sandbox's certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("setting up TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// A CA file held no certificate.
    #[error("no PEM certificate in the CA file")]
    NoCertificate,
    /// The CA could not be written.
    #[error("writing the CA certificate to {path}: {source}")]
    Write {
        /// Where.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The mesh's TLS material: a private CA and one server certificate for
/// `localhost`, `127.0.0.1` and `::1`, signed by it.
pub struct TlsMaterial {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

/// A client configuration trusting only the CA certificates of a PEM file
/// (a target file's `tls.ca_file`).
pub fn client_config_from_pem(pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    client_config(certs)
}

fn client_config(cas: Vec<CertificateDer<'static>>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The crypto provider every TLS configuration of the workspace uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsMaterial {
    /// A fresh CA and server certificate (ECDSA P-256), valid from now.
    pub fn generate() -> Result<TlsMaterial, TlsError> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name
            .push(DnType::CommonName, "service-test sandbox CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        let mut leaf = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])?;
        leaf.distinguished_name
            .push(DnType::CommonName, "service-test sandbox service");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate()?;
        let leaf_cert = leaf.signed_by(&leaf_key, &ca)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![leaf_cert.der().clone(), ca.der().clone()], key)?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsMaterial {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            server: Arc::new(server),
        })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The servers' configuration.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.server)
    }

    /// A client configuration trusting only this CA.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        client_config(vec![self.ca_der.clone()])
    }

    /// A client configuration for a service's links to its stores
    /// (PostgreSQL behind its TLS front): trusting only this CA, offering
    /// no application protocol.
    pub fn store_client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let mut config = (*self.client_config()?).clone();
        config.alpn_protocols.clear();
        Ok(Arc::new(config))
    }

    /// `builder` trusting this CA (and only it), refusing plain `http://`.
    pub fn trust(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        match self.client_config() {
            Ok(config) => builder
                .use_preconfigured_tls((*config).clone())
                .https_only(true),
            // Never: the CA was just made. Without roots every call fails
            // its handshake, which is the safe way to fail.
            Err(_) => builder.https_only(true),
        }
    }

    /// Writes the CA certificate to `path` (PEM).
    pub fn write_ca(&self, path: &Path) -> Result<(), TlsError> {
        std::fs::write(path, &self.ca_pem).map_err(|source| TlsError::Write {
            path: path.display().to_string(),
            source,
        })
    }
}
