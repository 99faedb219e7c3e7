//! HTTPS listeners: the rustls server config built from `tls:` ([`TlsFiles`]).

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;
use crate::error::SimError;

/// The server config for `files`: their certificate chain and key, aws-lc-rs's safe defaults
/// (no process-wide provider needed). actix-web adds ALPN `h2` and `http/1.1`.
pub(crate) fn server_config(files: &TlsFiles) -> Result<ServerConfig, SimError> {
    let invalid = |key: &str, path: &std::path::Path, problem: String| {
        SimError::Invalid(format!(
            "tls.{key}: {:?} {problem}; give a PEM file (`--tls-cert`/`--tls-key`)",
            path.display().to_string()
        ))
    };
    let cert_path = files.cert_file.as_path();
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            invalid(
                "cert_file",
                cert_path,
                format!("cannot be read as PEM ({e})"),
            )
        })?;
    if certs.is_empty() {
        return Err(invalid(
            "cert_file",
            cert_path,
            "holds no certificate".to_owned(),
        ));
    }
    let key_path = files.key_file.as_path();
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| invalid("key_file", key_path, format!("holds no private key ({e})")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| {
            invalid(
                "key_file",
                key_path,
                format!("does not go with tls.cert_file ({e})"),
            )
        })
}
