//! TLS for cutover's own PostgreSQL connections, with libpq's names and meanings.
//!
//! - `disable`: plain TCP. `prefer`: TLS when the server offers it, certificate not checked, a
//!   plaintext fallback said at `info` (and by preflight). `require`: TLS, certificate not
//!   checked, unless `sslrootcert` names a file (libpq's rule: it then behaves as `verify-ca`).
//! - `verify-ca`: the chain must lead to `sslrootcert` (a PEM file, or `system` for the
//!   operating system's store, the default). `verify-full`: and the certificate must name the
//!   host (an IP address matches an IP SAN).
//! - `sslcert` + `sslkey`: a client certificate; the key is refused when group or world can
//!   read it, as libpq refuses it.
//!
//! tokio-postgres parses only disable/prefer/require, so verification lives in the rustls
//! configuration built here; the crypto provider is aws-lc-rs, the workspace's one backend.
//! A failed handshake is said in words an operator acts on ([`describe_failure`]).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::plan::{PgEndpoint, SslMode};

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not at all (`prefer`, `require` without a root file): encryption only.
    Nothing,
    /// The chain, not the name (`verify-ca`, `require` with a root file).
    Chain,
    /// Chain and host name (`verify-full`).
    Full,
}

/// What cutover does for an endpoint: the mode in force and the check it implies.
pub fn check_of(e: &PgEndpoint) -> Check {
    let root_file = e.sslrootcert.as_deref().is_some_and(|r| r != "system");
    match e.effective_sslmode() {
        SslMode::Disable | SslMode::Prefer => Check::Nothing,
        SslMode::Require if root_file => Check::Chain,
        SslMode::Require => Check::Nothing,
        SslMode::VerifyCa => Check::Chain,
        SslMode::VerifyFull => Check::Full,
    }
}

/// tokio-postgres' own mode for an endpoint (whether TLS is tried, required, or not used).
pub fn transport(e: &PgEndpoint) -> tokio_postgres::config::SslMode {
    match e.effective_sslmode() {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The root certificates `sslrootcert` names: a PEM file, or the system store.
fn roots(e: &PgEndpoint) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match e.sslrootcert.as_deref() {
        Some(file) if file != "system" => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
                .map_err(|err| format!("sslrootcert {file}: cannot read it ({err})"))?
                .collect::<Result<_, _>>()
                .map_err(|err| format!("sslrootcert {file}: not PEM certificates ({err})"))?;
            if certs.is_empty() {
                return Err(format!("sslrootcert {file}: holds no certificate"));
            }
            for cert in certs {
                store
                    .add(cert)
                    .map_err(|err| format!("sslrootcert {file}: {err}"))?;
            }
        }
        _ => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err(
                    "sslrootcert: the operating system's certificate store is empty (install ca-certificates, or name a CA file)".to_owned(),
                );
            }
        }
    }
    Ok(store)
}

/// The client certificate and key, the key refused when group or world can read it.
fn client_identity(
    e: &PgEndpoint,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, String> {
    let (Some(cert), Some(key)) = (&e.sslcert, &e.sslkey) else {
        return Ok(None);
    };
    crate::secret::check_private_file(key)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|err| format!("sslcert {}: cannot read it ({err})", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|err| format!("sslcert {}: not a PEM certificate ({err})", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|err| format!("sslkey {}: not a PEM private key ({err})", key.display()))?;
    Ok(Some((certs, key)))
}

/// The connector for an endpoint (its rustls configuration carries the check).
pub fn connector(e: &PgEndpoint) -> Result<MakeRustlsConnect, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS setup: {err}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match check_of(e) {
        Check::Nothing => Arc::new(EncryptOnly(provider)),
        check => {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(e)?), provider)
                .build()
                .map_err(|err| format!("TLS setup: {err}"))?;
            if check == Check::Chain {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match client_identity(e)? {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|err| format!("sslcert/sslkey: {err}"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// A connector that encrypts when the server offers TLS and checks no certificate: what the
/// lab's own sessions and writers use (with `sslmode` prefer) against servers it started.
pub fn encrypt_only() -> MakeRustlsConnect {
    let provider = provider();
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the default protocol versions are supported")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
        .with_no_client_auth();
    MakeRustlsConnect::new(config)
}

/// `require` / `prefer`: encryption, no check of who answers (libpq's meaning), but the
/// handshake's signatures are still verified.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must hold; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A failed connection's TLS cause, in words with the fix; `None` when TLS was not the cause.
pub fn describe_failure(e: &tokio_postgres::Error, endpoint: &PgEndpoint) -> Option<String> {
    let mode = endpoint.effective_sslmode();
    let mode_name = serde_json::to_value(mode)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut chain = e.to_string();
    let mut next = std::error::Error::source(e);
    while let Some(s) = next {
        chain.push_str(&format!(": {s}"));
        next = s.source();
    }
    if chain.contains("server does not support TLS") {
        return Some(format!(
            "the server does not offer TLS, and sslmode `{mode_name}` requires it (fix: enable `ssl` on the server with a certificate, or, on a network you trust, set sslmode = \"prefer\")"
        ));
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return Some(describe_rustls(tls, endpoint));
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(describe_rustls(tls, endpoint));
        }
        source = s.source();
    }
    None
}

fn describe_rustls(e: &rustls::Error, endpoint: &PgEndpoint) -> String {
    let roots = match endpoint.sslrootcert.as_deref() {
        Some(f) if f != "system" => format!("the CA file {f}"),
        _ => "the operating system's store".to_owned(),
    };
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "the server's certificate is signed by a CA not in {roots} (fix: set `sslrootcert` to the CA that signed it)"
            ),
            CertificateError::NotValidForName => format!(
                "the server's certificate does not name host {} (fix: connect by a name the certificate covers, or reissue it with this name)",
                endpoint.host
            ),
            CertificateError::NotValidForNameContext { presented, .. } => format!(
                "the server's certificate does not name host {}: it covers {} (fix: connect by one of those names, or reissue it with this name)",
                endpoint.host,
                presented.join(", ")
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired (fix: renew it on the server)".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (fix: check the clocks of both machines)"
                    .to_owned()
            }
            other => format!("the server's certificate was refused: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => format!(
            "the server ended the TLS handshake ({alert:?}): it may require a client certificate (set `sslcert` and `sslkey`) or refuse the one given"
        ),
        other => format!("TLS handshake failed: {other}"),
    }
}
