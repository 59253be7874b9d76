//! New values for the keys of a rotated Secret, from the operating system's CSPRNG: random
//! strings, encoded bytes, UUIDs, key pairs and TLS certificates. Pure but for the randomness;
//! every value is [`Sensitive`] from the moment it exists.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use pgpilot_api::rotation::{CertificateOptions, GeneratedKey, Generator, KeyAlgorithm};
use pgpilot_toolkit::Sensitive;
use rand::RngExt as _;
use rand::seq::IndexedRandom as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SignatureAlgorithm,
};
use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};

/// Why a value could not be made. No variant carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key {key}: {message}")]
    Invalid { key: String, message: String },
    #[error("key {key}: generating the {algorithm:?} key failed: {reason}")]
    Key {
        key: String,
        algorithm: KeyAlgorithm,
        reason: String,
    },
    #[error("key {key}: the issuer in Secret {secret} is not a usable CA: {reason}")]
    Issuer {
        key: String,
        secret: String,
        reason: String,
    },
    #[error("key {key}: signing the certificate failed: {reason}")]
    Certificate { key: String, reason: String },
}

impl Error {
    /// A bounded metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "invalid",
            Error::Key { .. } => "key",
            Error::Issuer { .. } => "issuer",
            Error::Certificate { .. } => "certificate",
        }
    }
}

/// A CA read from the issuer Secret (`tls.crt`, `tls.key`).
pub struct Ca {
    /// The Secret it came from, for messages.
    pub secret: String,
    pub certificate_pem: Sensitive,
    pub key_pem: Sensitive,
}

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The Secret keys and values one generated key produces (a certificate also writes its private
/// key and, if asked, its issuer's certificate), at `now`.
pub fn generate(
    spec: &GeneratedKey,
    issuer: Option<&Ca>,
    now: SystemTime,
) -> Result<Vec<(String, Sensitive)>, Error> {
    let key = spec.key.clone();
    let invalid = |message: String| Error::Invalid {
        key: key.clone(),
        message,
    };
    let length = usize::try_from(spec.length)
        .ok()
        .filter(|l| (16..=1024).contains(l))
        .ok_or_else(|| invalid(format!("length {} is not in 16..=1024", spec.length)))?;
    let one = |value: String| Ok(vec![(key.clone(), Sensitive::new(value))]);
    match spec.generator {
        Generator::Alphanumeric => one(draw(ALPHANUMERIC, length)),
        Generator::Characters => {
            let mut chars: Vec<char> = spec.characters.as_deref().unwrap_or("").chars().collect();
            chars.sort_unstable();
            chars.dedup();
            if chars.len() < 2 {
                return Err(invalid(
                    "characters needs at least 2 distinct characters".into(),
                ));
            }
            let mut rng = rand::rng();
            one((0..length).filter_map(|_| chars.choose(&mut rng)).collect())
        }
        Generator::Hex => one(hex(&bytes(length))),
        Generator::Base64 => one(base64::engine::general_purpose::STANDARD.encode(bytes(length))),
        Generator::Uuid => one(uuid::Uuid::new_v4().hyphenated().to_string()),
        Generator::KeyPair => {
            let options = spec.key_pair.clone().unwrap_or_default();
            let pair = key_pair(&key, options.algorithm)?;
            let public = options.public_key.unwrap_or_else(|| format!("{key}.pub"));
            Ok(vec![
                (key.clone(), Sensitive::new(pair.serialize_pem())),
                (public, Sensitive::new(pair.public_key_pem())),
            ])
        }
        Generator::Certificate => {
            let options = spec
                .certificate
                .as_ref()
                .ok_or_else(|| invalid("the Certificate generator needs certificate".into()))?;
            certificate(&key, options, issuer, now)
        }
    }
}

fn bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    rand::rng().fill(&mut b[..]);
    b
}

fn draw(alphabet: &[u8], n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .filter_map(|_| alphabet.choose(&mut rng).map(|b| char::from(*b)))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn signature_algorithm(algorithm: KeyAlgorithm) -> &'static SignatureAlgorithm {
    match algorithm {
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
            &rcgen::PKCS_RSA_SHA256
        }
        KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
    }
}

/// A new key pair. ring (rcgen's backend) signs with RSA keys but cannot make them: RSA keys
/// come from the `rsa` crate.
fn key_pair(key: &str, algorithm: KeyAlgorithm) -> Result<KeyPair, Error> {
    let failed = |reason: String| Error::Key {
        key: key.to_owned(),
        algorithm,
        reason,
    };
    let bits = match algorithm {
        KeyAlgorithm::Rsa2048 => 2048,
        KeyAlgorithm::Rsa3072 => 3072,
        KeyAlgorithm::Rsa4096 => 4096,
        _ => {
            return KeyPair::generate_for(signature_algorithm(algorithm))
                .map_err(|e| failed(e.to_string()));
        }
    };
    let private =
        rsa::PrivateKey::new(&mut rand::rng(), bits).map_err(|e| failed(e.to_string()))?;
    let pem = private
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| failed(e.to_string()))?;
    KeyPair::from_pkcs8_pem_and_sign_algo(&pem, signature_algorithm(algorithm))
        .map_err(|e| failed(e.to_string()))
}

/// A certificate valid from a minute before `now` (clocks differ) for `options.validity`,
/// self-signed or signed by `issuer`.
fn certificate(
    key: &str,
    options: &CertificateOptions,
    issuer: Option<&Ca>,
    now: SystemTime,
) -> Result<Vec<(String, Sensitive)>, Error> {
    let invalid = |message: String| Error::Invalid {
        key: key.to_owned(),
        message,
    };
    let signing = |e: rcgen::Error| Error::Certificate {
        key: key.to_owned(),
        reason: e.to_string(),
    };
    let validity = humantime::parse_duration(&options.validity)
        .map_err(|e| invalid(format!("validity {:?}: {e}", options.validity)))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, options.common_name.as_str());
    params.distinguished_name = dn;
    for name in &options.dns_names {
        let name = name
            .as_str()
            .try_into()
            .map_err(|_| invalid(format!("{name:?} is not a DNS name")))?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    for ip in &options.ip_addresses {
        let ip = ip
            .parse()
            .map_err(|_| invalid(format!("{ip:?} is not an IP address")))?;
        params.subject_alt_names.push(SanType::IpAddress(ip));
    }
    params.not_before = (now - Duration::from_secs(60)).into();
    params.not_after = (now + validity).into();
    params.use_authority_key_identifier_extension = issuer.is_some();
    if options.is_ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
    } else {
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
    }
    let pair = key_pair(key, options.algorithm)?;
    let mut out = Vec::new();
    let cert = match issuer {
        None => params.self_signed(&pair).map_err(signing)?,
        Some(ca) => {
            let bad = |reason: String| Error::Issuer {
                key: key.to_owned(),
                secret: ca.secret.clone(),
                reason,
            };
            let ca_key = KeyPair::from_pem(ca.key_pem.expose())
                .map_err(|_| bad("tls.key is not a PEM private key".into()))?;
            let ca_issuer = Issuer::from_ca_cert_pem(ca.certificate_pem.expose(), ca_key)
                .map_err(|_| bad("tls.crt is not a PEM CA certificate".into()))?;
            if let Some(ca_key_name) = &options.ca_key {
                out.push((ca_key_name.clone(), ca.certificate_pem.clone()));
            }
            params.signed_by(&pair, &ca_issuer).map_err(signing)?
        }
    };
    out.insert(
        0,
        (
            options.private_key.clone(),
            Sensitive::new(pair.serialize_pem()),
        ),
    );
    out.insert(0, (key.to_owned(), Sensitive::new(cert.pem())));
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pgpilot_api::rotation::{IssuerRef, KeyPairOptions};
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::traits::PublicKeyParts as _;
    use x509_parser::pem::parse_x509_pem;
    use x509_parser::prelude::*;

    use super::*;

    fn key(generator: Generator, length: i32) -> GeneratedKey {
        GeneratedKey {
            key: "k".into(),
            generator,
            length,
            characters: None,
            key_pair: None,
            certificate: None,
        }
    }

    fn one(spec: &GeneratedKey) -> String {
        let out = generate(spec, None, SystemTime::now()).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "k");
        out[0].1.expose().to_owned()
    }

    #[test]
    fn strings_have_the_length_and_alphabet_asked_for_and_differ_each_time() {
        let a = one(&key(Generator::Alphanumeric, 40));
        assert_eq!(a.len(), 40);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, one(&key(Generator::Alphanumeric, 40)));

        let mut chars = key(Generator::Characters, 64);
        chars.characters = Some("ab!!".into());
        let c = one(&chars);
        assert_eq!(c.chars().count(), 64);
        assert!(c.chars().all(|c| "ab!".contains(c)), "{c}");
        chars.characters = Some("zzz".into());
        let e = generate(&chars, None, SystemTime::now()).unwrap_err();
        assert!(e.to_string().contains("2 distinct"), "{e}");

        let h = one(&key(Generator::Hex, 16));
        assert_eq!(h.len(), 32);
        assert!(
            h.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );

        let b = one(&key(Generator::Base64, 33));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&b)
            .unwrap();
        assert_eq!(decoded.len(), 33);

        let u = uuid::Uuid::parse_str(&one(&key(Generator::Uuid, 32))).unwrap();
        assert_eq!(u.get_version_num(), 4);

        let e = generate(&key(Generator::Hex, 8), None, SystemTime::now()).unwrap_err();
        assert_eq!(e.label(), "invalid");
    }

    #[test]
    fn key_pairs_parse_back_as_the_algorithm_asked_for() {
        for algorithm in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Ed25519,
            KeyAlgorithm::Rsa2048,
        ] {
            let mut spec = key(Generator::KeyPair, 32);
            spec.key_pair = Some(KeyPairOptions {
                algorithm,
                public_key: None,
            });
            let out = generate(&spec, None, SystemTime::now()).unwrap();
            let keys: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(keys, ["k", "k.pub"]);
            let private = out[0].1.expose();
            assert!(
                private.starts_with("-----BEGIN PRIVATE KEY-----"),
                "{algorithm:?}"
            );
            let parsed = KeyPair::from_pem(private).unwrap();
            assert!(
                parsed.is_compatible(signature_algorithm(algorithm)),
                "{algorithm:?}"
            );
            assert_eq!(parsed.public_key_pem(), out[1].1.expose());
            if algorithm == KeyAlgorithm::Rsa2048 {
                let rsa = rsa::PrivateKey::from_pkcs8_pem(private).unwrap();
                assert_eq!(rsa.size() * 8, 2048);
            }
        }
        let mut named = key(Generator::KeyPair, 32);
        named.key_pair = Some(KeyPairOptions {
            algorithm: KeyAlgorithm::Ed25519,
            public_key: Some("id.pub".into()),
        });
        let out = generate(&named, None, SystemTime::now()).unwrap();
        assert_eq!(out[1].0, "id.pub");
    }

    fn cert_spec(options: CertificateOptions) -> GeneratedKey {
        let mut spec = key(Generator::Certificate, 32);
        spec.key = "tls.crt".into();
        spec.certificate = Some(options);
        spec
    }

    fn options(common_name: &str) -> CertificateOptions {
        CertificateOptions {
            algorithm: KeyAlgorithm::EcdsaP256,
            common_name: common_name.into(),
            dns_names: vec!["api.example.test".into()],
            ip_addresses: vec!["10.0.0.7".into()],
            validity: "720h".into(),
            is_ca: false,
            issuer: None,
            private_key: "tls.key".into(),
            ca_key: None,
        }
    }

    #[test]
    fn a_self_signed_certificate_has_its_names_validity_and_own_signature() {
        let now = SystemTime::now();
        let out = generate(&cert_spec(options("api")), None, now).unwrap();
        let keys: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["tls.crt", "tls.key"]);
        let (_, pem) = parse_x509_pem(out[0].1.expose().as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "api"
        );
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        assert!(
            san.general_names
                .contains(&GeneralName::DNSName("api.example.test"))
        );
        assert!(
            san.general_names
                .contains(&GeneralName::IPAddress(&[10, 0, 0, 7]))
        );
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / 86_400;
        assert_eq!(days, 30);
        assert!(!cert.is_ca());
        cert.verify_signature(None).unwrap();
        // The private key is the certificate's.
        let pair = KeyPair::from_pem(out[1].1.expose()).unwrap();
        assert_eq!(
            pair.public_key_raw(),
            cert.public_key().subject_public_key.data.as_ref()
        );
    }

    #[test]
    fn a_certificate_signed_by_a_ca_from_another_secret_verifies_against_it() {
        let now = SystemTime::now();
        let mut ca_options = options("pgpilot test CA");
        ca_options.is_ca = true;
        ca_options.algorithm = KeyAlgorithm::EcdsaP384;
        let ca = generate(&cert_spec(ca_options), None, now).unwrap();
        let ca = Ca {
            secret: "ca".into(),
            certificate_pem: ca[0].1.clone(),
            key_pem: ca[1].1.clone(),
        };
        let mut leaf = options("api");
        leaf.algorithm = KeyAlgorithm::Ed25519;
        leaf.issuer = Some(IssuerRef {
            secret_name: "ca".into(),
        });
        leaf.ca_key = Some("ca.crt".into());
        let out = generate(&cert_spec(leaf.clone()), Some(&ca), now).unwrap();
        let keys: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["tls.crt", "tls.key", "ca.crt"]);
        assert_eq!(out[2].1, ca.certificate_pem);

        let (_, ca_pem) = parse_x509_pem(ca.certificate_pem.expose().as_bytes()).unwrap();
        let ca_cert = ca_pem.parse_x509().unwrap();
        assert!(ca_cert.is_ca());
        let (_, leaf_pem) = parse_x509_pem(out[0].1.expose().as_bytes()).unwrap();
        let leaf_cert = leaf_pem.parse_x509().unwrap();
        assert_eq!(leaf_cert.issuer(), ca_cert.subject());
        leaf_cert
            .verify_signature(Some(ca_cert.public_key()))
            .unwrap();
        assert!(leaf_cert.verify_signature(None).is_err());

        // A broken issuer is named, and nothing of its content is in the message.
        let broken = Ca {
            secret: "ca".into(),
            certificate_pem: ca.certificate_pem.clone(),
            key_pem: Sensitive::new("-----BEGIN PRIVATE KEY-----\nhunter2\n"),
        };
        let e = generate(&cert_spec(leaf), Some(&broken), now).unwrap_err();
        assert_eq!(e.label(), "issuer");
        let message = e.to_string();
        assert!(
            message.contains("Secret ca") && !message.contains("hunter2"),
            "{message}"
        );
    }

    #[test]
    fn a_bad_validity_or_name_is_refused_with_the_key_named() {
        let mut o = options("api");
        o.validity = "soon".into();
        let e = generate(&cert_spec(o), None, SystemTime::now()).unwrap_err();
        assert!(e.to_string().starts_with("key tls.crt: validity"), "{e}");
        let mut o = options("api");
        o.ip_addresses = vec!["10.0.0.300".into()];
        let e = generate(&cert_spec(o), None, SystemTime::now()).unwrap_err();
        assert!(e.to_string().contains("not an IP address"), "{e}");
    }
}
