//! rustls's one process-wide crypto provider, for every TLS client we build (awc's, Redis').

/// Installs aws-lc-rs as rustls's crypto provider, once. rustls needs one per process, and when
/// another crate also enabled `ring` it cannot pick one by itself and panics; installing ours
/// before the first TLS config is built makes the choice (a second install by anyone is
/// refused harmlessly).
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
