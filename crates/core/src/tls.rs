//! TLS for every HTTP client Genesis builds (the LLM providers, HTTP agents, the OTLP
//! exporter): a rustls [`ClientConfig`](rustls::ClientConfig) with the `ring` provider,
//! handed to reqwest explicitly (`ClientBuilder::tls_backend_preconfigured`). Only with
//! the `tls` feature.
//!
//! No process-global rustls provider is ever installed here (a library must not choose
//! for the whole process: an application that later calls
//! `CryptoProvider::install_default` would find the slot taken). reqwest's own rustls
//! path would either use the global provider or panic under `rustls-no-provider`, so the
//! configuration is built here and passed in.
//!
//! Trust roots: the `rustls-platform-verifier` crate that reqwest uses internally is not
//! a workspace dependency, so the operating system's CA bundle (the same PEM files
//! OpenSSL and `rustls-native-certs` read) is loaded once per process and verified with
//! rustls' WebPKI verifier. This is the one file read of this crate (see
//! docs/ARCHITECTURE.md, "Deliberate exceptions"). Callers who need other roots build
//! their own [`RootCertStore`] and pass it to [`client_config`].

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Where Linux distributions, the BSDs and macOS keep their CA bundle.
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/etc/ssl/cert.pem",
    "/usr/local/share/certs/ca-root-nss.crt",
];

static SYSTEM_ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();

/// Loads every parsable certificate of the first bundle that yields any.
fn load_system_roots() -> RootCertStore {
    for path in CA_BUNDLES {
        let store = load_bundle(Path::new(path));
        if !store.is_empty() {
            tracing::debug!(path, roots = store.len(), "loaded tls trust roots");
            return store;
        }
    }
    RootCertStore::empty()
}

fn load_bundle(path: &Path) -> RootCertStore {
    let mut store = RootCertStore::empty();
    let Ok(iter) = CertificateDer::pem_file_iter(path) else {
        return store;
    };
    // Skip certificates rustls cannot use rather than failing the whole bundle.
    let certs = iter.filter_map(Result::ok);
    let (_added, _ignored) = store.add_parsable_certificates(certs);
    store
}

/// The system trust roots, loaded on first use (empty when no CA bundle is found: an
/// `https` connection then fails its handshake, which callers may check up front with
/// [`RootCertStore::is_empty`]).
pub fn system_roots() -> Arc<RootCertStore> {
    SYSTEM_ROOTS
        .get_or_init(|| Arc::new(load_system_roots()))
        .clone()
}

/// A rustls client configuration using the `ring` provider and `roots`.
///
/// # Errors
/// The rustls error when the provider supports none of the safe protocol versions
/// (cannot happen with `ring`, but rustls reports it as a `Result`).
pub fn client_config(roots: Arc<RootCertStore>) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_ring_config_without_touching_the_global_provider() {
        let config = client_config(Arc::new(RootCertStore::empty())).unwrap();
        assert!(
            config
                .crypto_provider()
                .cipher_suites
                .iter()
                .any(|s| s.tls13().is_some())
        );
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
    }

    #[test]
    fn missing_bundles_yield_an_empty_store() {
        assert!(load_bundle(Path::new("/nonexistent/ca.pem")).is_empty());
    }
}
