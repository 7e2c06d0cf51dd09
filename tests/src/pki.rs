//! A throw-away PKI for the TLS tests: a CA, a server certificate for `localhost` and
//! 127.0.0.1, a client certificate, and a second CA that nothing trusts. Written as PEM files;
//! rustls client configurations and ureq agents built from them.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

pub struct Pki {
    pub dir: tempfile::TempDir,
}

fn issue(issuer: &rcgen::Issuer<'_, rcgen::KeyPair>, names: &[&str], client: bool) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key pair");
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
    params.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    let cert = params.signed_by(&key, issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

fn ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().expect("key pair");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("self-signed CA");
    (cert.pem(), rcgen::Issuer::new(params, key))
}

impl Pki {
    /// ca.pem, server.pem/server-key.pem (localhost, 127.0.0.1), client.pem/client-key.pem,
    /// and rogue-ca.pem with rogue-server.pem/rogue-server-key.pem (same names, other CA).
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca_pem, issuer) = ca("clockpath test CA");
        let (rogue_pem, rogue) = ca("untrusted CA");
        let w = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write PEM");
        w("ca.pem", &ca_pem);
        w("rogue-ca.pem", &rogue_pem);
        let (c, k) = issue(&issuer, &["localhost", "127.0.0.1"], false);
        w("server.pem", &c);
        w("server-key.pem", &k);
        let (c, k) = issue(&issuer, &["prometheus.clockpath.test"], true);
        w("client.pem", &c);
        w("client-key.pem", &k);
        let (c, k) = issue(&rogue, &["localhost", "127.0.0.1"], false);
        w("rogue-server.pem", &c);
        w("rogue-server-key.pem", &k);
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read PEM")
    }

    /// A client configuration trusting `ca.pem`, with the client certificate if `identity`.
    pub fn client_config(&self, identity: bool) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.path("ca.pem")).expect("ca.pem") {
            roots.add(c.expect("CA certificate")).expect("add CA");
        }
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        Arc::new(if identity {
            let chain = CertificateDer::pem_file_iter(self.path("client.pem"))
                .expect("client.pem")
                .collect::<Result<Vec<_>, _>>()
                .expect("client chain");
            let key = PrivateKeyDer::from_pem_file(self.path("client-key.pem")).expect("client key");
            b.with_client_auth_cert(chain, key).expect("client identity")
        } else {
            b.with_no_client_auth()
        })
    }

    /// A ureq agent trusting `ca.pem` (and presenting the client certificate if `identity`).
    pub fn agent(&self, identity: bool) -> ureq::Agent {
        ureq::AgentBuilder::new()
            .tls_config(self.client_config(identity))
            .timeout(std::time::Duration::from_secs(10))
            .build()
    }

    /// A server configuration from `cert`/`key` files of this PKI (for in-process receivers).
    pub fn server_config(&self, cert: &str, key: &str, client_ca: Option<&str>) -> Arc<rustls::ServerConfig> {
        let chain = CertificateDer::pem_file_iter(self.path(cert))
            .expect("cert")
            .collect::<Result<Vec<_>, _>>()
            .expect("chain");
        let key = PrivateKeyDer::from_pem_file(self.path(key)).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let b = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(self.path(ca)).expect("client CA") {
                    roots.add(c.expect("CA")).expect("add CA");
                }
                b.with_client_cert_verifier(
                    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .expect("client verifier"),
                )
            }
            None => b.with_no_client_auth(),
        };
        Arc::new(b.with_single_cert(chain, key).expect("server certificate"))
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// The file's path as UTF-8 (tests write under a temp dir).
pub fn utf8(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
