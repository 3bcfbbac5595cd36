//! A throwaway certificate authority for the lab's TLS-only servers: a CA, server certificates
//! for the names the lab connects by, client certificates, all generated in-process (`rcgen`)
//! and written as PEM files (keys mode 0600, owned by the server's user where given).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use super::LabError;
use super::env::write_secret;

/// A CA whose certificate is at [`LabCa::ca_file`].
pub struct LabCa {
    /// The CA certificate (PEM): what a client's `sslrootcert` names.
    pub ca_file: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

fn failed(what: &str, e: rcgen::Error) -> LabError {
    LabError::io(
        Path::new(what),
        std::io::Error::other(format!("certificate generation: {e}")),
    )
}

impl LabCa {
    /// Creates a CA named `name`, its certificate written in `dir`.
    pub fn create(dir: &Path, name: &str) -> Result<LabCa, LabError> {
        std::fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| failed(name, e))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("cutover lab CA {name}"));
        let key = KeyPair::generate().map_err(|e| failed(name, e))?;
        let cert = params.self_signed(&key).map_err(|e| failed(name, e))?;
        let ca_file = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&ca_file, cert.pem()).map_err(|e| LabError::io(&ca_file, e))?;
        Ok(LabCa {
            ca_file,
            issuer: Issuer::new(params, key),
        })
    }

    /// Issues a certificate for `names` (DNS names or IP addresses, the first also the common
    /// name), writing it to `cert` and its key to `key` (0600, owned by `owner`).
    pub fn issue(
        &self,
        names: &[&str],
        cert: &Path,
        key: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<(), LabError> {
        let what = names.first().copied().unwrap_or("certificate");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .map_err(|e| failed(what, e))?;
        params.distinguished_name.push(DnType::CommonName, what);
        let pair = KeyPair::generate().map_err(|e| failed(what, e))?;
        let issued = params
            .signed_by(&pair, &self.issuer)
            .map_err(|e| failed(what, e))?;
        if let Some(parent) = cert.parent() {
            std::fs::create_dir_all(parent).map_err(|e| LabError::io(parent, e))?;
        }
        std::fs::write(cert, issued.pem()).map_err(|e| LabError::io(cert, e))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(cert, Some(uid), Some(gid))
                .map_err(|e| LabError::io(cert, e))?;
        }
        write_secret(key, pair.serialize_pem().trim_end(), owner)
    }
}

/// How a lab server (PostgreSQL or MariaDB) takes TLS.
pub struct ServerTls<'a> {
    /// The CA that signs the server's certificate (and, when asked, checks clients').
    pub ca: &'a LabCa,
    /// The names the server's certificate covers.
    pub names: Vec<String>,
    /// Only clients with a certificate from `ca` get in (`clientcert=verify-full`).
    pub client_cert: bool,
    /// MariaDB: `performance_schema` on, so each session's TLS status can be read from the
    /// server's side (the tests' proof of a replication link's cipher). It costs every
    /// statement something, so a benchmark comparing TLS with plaintext leaves it off.
    pub session_status: bool,
}
