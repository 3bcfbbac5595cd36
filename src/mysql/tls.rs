//! TLS for cutover's own MySQL/MariaDB connections, with the mysql client's names and meanings.
//!
//! - `disabled`: plain TCP. `preferred`: TLS when the server offers it, certificate not
//!   checked; a plaintext fallback is said at `info`. `required`: TLS, certificate not checked.
//! - `verify_ca`: the chain must lead to `ssl_ca` (a PEM file, or `system`, the operating
//!   system's store and the default). `verify_identity`: and the certificate must name the host.
//!   Here `verify_ca` names the host too (see [`ssl_opts`]): stricter, never weaker.
//! - `ssl_cert` + `ssl_key`: a client certificate; the key is refused when group or world can
//!   read it.
//!
//! mysql_async's rustls backend carries the check (its `SslOpts`); the roots are given to it
//! explicitly, never its built-in bundle, so `system` means this machine's store.

use mysql_async::{ClientIdentity, SslOpts};

use crate::plan::{MysqlEndpoint, MysqlSslMode};

/// The TLS options for an endpoint; `None`: plain TCP.
pub fn ssl_opts(e: &MysqlEndpoint) -> Result<Option<SslOpts>, String> {
    let mode = e.effective_ssl_mode();
    if mode == MysqlSslMode::Disabled {
        return Ok(None);
    }
    let mut opts = SslOpts::default();
    match mode {
        // Nothing is checked (mysql_async still wants roots to build its verifier: its
        // built-in ones, never consulted).
        MysqlSslMode::Preferred | MysqlSslMode::Required => {
            opts = opts
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true);
        }
        // verify_ca checks the name too (stricter than the mysql client): mysql_async 0.37
        // skips the name check by matching the rustls error's text against `NotValidForName`,
        // which rustls 0.23 no longer prints, so a chain-only check cannot be built on it.
        _ => {
            opts = opts
                .with_disable_built_in_roots(true)
                .with_root_certs(match roots(e)? {
                    Roots::File(path) => vec![path.into()],
                    Roots::Der(certs) => certs.into_iter().map(Into::into).collect(),
                });
        }
    }
    if let (Some(cert), Some(key)) = (&e.ssl_cert, &e.ssl_key) {
        crate::secret::check_private_file(key)?;
        opts = opts.with_client_identity(Some(ClientIdentity::new(
            cert.clone().into(),
            key.clone().into(),
        )));
    }
    Ok(Some(opts))
}

/// Where the trusted CAs come from.
enum Roots {
    /// A PEM file.
    File(std::path::PathBuf),
    /// Certificates (DER) from the system store.
    Der(Vec<Vec<u8>>),
}

fn roots(e: &MysqlEndpoint) -> Result<Roots, String> {
    match e.ssl_ca.as_deref() {
        Some(file) if file != "system" => {
            if !std::path::Path::new(file).is_file() {
                return Err(format!("ssl_ca {file}: no such file"));
            }
            Ok(Roots::File(std::path::PathBuf::from(file)))
        }
        _ => {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                return Err(
                    "ssl_ca: the operating system's certificate store is empty (install ca-certificates, or name a CA file)".to_owned(),
                );
            }
            Ok(Roots::Der(
                found
                    .certs
                    .into_iter()
                    .map(|c| c.as_ref().to_vec())
                    .collect(),
            ))
        }
    }
}

/// TLS for a replica's link to the server `e` describes (the paths are opened by the replica
/// server, on its machine: the same paths by default). `preferred` leaves the replica's own
/// default; `required` encrypts; `verify_ca` adds the CA (MariaDB checks the chain only with the
/// name); `verify_identity` checks the certificate.
pub fn replica_tls(e: &MysqlEndpoint) -> Option<super::dialect::ReplicaTls> {
    let mode = e.effective_ssl_mode();
    if matches!(mode, MysqlSslMode::Disabled | MysqlSslMode::Preferred) {
        return None;
    }
    let verifying = matches!(mode, MysqlSslMode::VerifyCa | MysqlSslMode::VerifyIdentity);
    // The replica server opens these paths, on its machine: the link's own, else cutover's.
    let ca = match e.link_ssl_ca.as_deref().or(e.ssl_ca.as_deref()) {
        Some(file) if file != "system" => Some(file.to_owned()),
        _ if verifying => Some("/etc/ssl/certs/ca-certificates.crt".to_owned()),
        _ => None,
    };
    let cert = e
        .link_ssl_cert
        .clone()
        .or_else(|| e.ssl_cert.as_ref().map(|p| p.display().to_string()));
    let key = e
        .link_ssl_key
        .clone()
        .or_else(|| e.ssl_key.as_ref().map(|p| p.display().to_string()));
    Some(super::dialect::ReplicaTls {
        ca,
        verify: mode == MysqlSslMode::VerifyIdentity,
        identity: cert.zip(key),
    })
}

/// A failed connection's TLS cause, in words with the fix; `None` when TLS was not the cause.
pub fn describe_failure(e: &mysql_async::Error, endpoint: &MysqlEndpoint) -> Option<String> {
    let ca = match endpoint.ssl_ca.as_deref() {
        Some(f) if f != "system" => format!("the CA file {f}"),
        _ => "the operating system's store".to_owned(),
    };
    let text = {
        let mut t = e.to_string();
        let mut next = std::error::Error::source(e);
        while let Some(s) = next {
            t.push_str(&format!(": {s}"));
            next = s.source();
        }
        t
    };
    if matches!(
        e,
        mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer)
    ) {
        return Some(
            "the server does not offer TLS, and the ssl_mode requires it (fix: set `ssl_cert`/`ssl_key`/`require_secure_transport` on the server, or, on a network you trust, ssl_mode = \"preferred\")".to_owned(),
        );
    }
    if text.contains("UnknownIssuer") || text.contains("unknown issuer") {
        return Some(format!(
            "the server's certificate is signed by a CA not in {ca} (fix: set `ssl_ca` to the CA that signed it)"
        ));
    }
    if let Some(at) = text.find("certificate is only valid for ") {
        let covers = text[at + "certificate is only valid for ".len()..]
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        return Some(format!(
            "the server's certificate does not name host {}: it covers {covers} (fix: connect by one of those names, or reissue it with this name)",
            endpoint.host
        ));
    }
    if text.contains("NotValidForName") || text.contains("not valid for name") {
        return Some(format!(
            "the server's certificate does not name host {} (fix: connect by a name the certificate covers, or reissue it with this name)",
            endpoint.host
        ));
    }
    if text.contains("Expired") || text.contains("expired") {
        return Some(
            "the server's certificate has expired (fix: renew it on the server)".to_owned(),
        );
    }
    None
}

/// The fix for a replica I/O thread error that is a failed TLS handshake (client error 2026
/// and its kin: `SSL connection error`, a certificate the replica's CA file does not vouch
/// for); `None` for any other error.
pub fn link_error_fix(io_error: &str) -> Option<&'static str> {
    let e = io_error.to_ascii_lowercase();
    (e.contains("ssl") || e.contains("tls") || e.contains("certificate") || e.contains("2026"))
        .then_some(
            "the replica's TLS handshake with its source failed: the CA file the link names (`link_ssl_ca`, else `ssl_ca`) must exist on the replica's own server and have signed the source's certificate, which must name the host the replica connects to (`replication_host`); a client certificate (`link_ssl_cert`/`link_ssl_key`) must be readable by that server. Put the right file there (the I/O thread retries by itself, or `START REPLICA` there), or, when the plan names the wrong path, clean the pair up and start it again",
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> MysqlEndpoint {
        toml::from_str(
            "host = \"db.example.com\"\nuser = \"cutover\"\nssl_ca = \"/home/op/ca.pem\"\nssl_cert = \"/home/op/c.pem\"\nssl_key = \"/home/op/c.key\"\n",
        )
        .expect("endpoint")
    }

    #[test]
    fn the_replica_link_uses_the_paths_its_server_sees_and_cutovers_by_default() {
        let mut e = endpoint();
        let link = replica_tls(&e).expect("verify_identity off loopback");
        assert!(link.verify);
        assert_eq!(link.ca.as_deref(), Some("/home/op/ca.pem"));
        assert_eq!(
            link.identity,
            Some(("/home/op/c.pem".into(), "/home/op/c.key".into()))
        );
        e.link_ssl_ca = Some("/etc/mysql/ca.pem".into());
        e.link_ssl_cert = Some("/etc/mysql/link.pem".into());
        e.link_ssl_key = Some("/etc/mysql/link.key".into());
        let link = replica_tls(&e).unwrap();
        assert_eq!(link.ca.as_deref(), Some("/etc/mysql/ca.pem"));
        assert_eq!(
            link.identity,
            Some(("/etc/mysql/link.pem".into(), "/etc/mysql/link.key".into()))
        );
        assert!(link_error_fix("error connecting to master 'r@h:1' - retry-time: 60 message: SSL connection error: certificate verify failed").is_some());
        assert!(link_error_fix("Access denied for user 'r'@'h'").is_none());
    }
}
