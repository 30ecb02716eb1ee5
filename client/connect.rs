//! Connecting to the daemon: a TLS channel that trusts only the CA in the
//! home, and typed clients that send the school's token on every call.

use anyhow::{Context as _, Result, bail};
use baton::api::v1::{
    directory_client::DirectoryClient, enrolment_client::EnrolmentClient,
    exchange_client::ExchangeClient,
};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::home::Home;

/// Largest gRPC message either side decodes (chunks are 256 KiB).
pub const MAX_MESSAGE: usize = 8 * 1024 * 1024;

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct Bearer(pub(crate) MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// An authenticated connection.
pub type Authed = InterceptedService<Channel, Bearer>;

/// Opens a TLS channel to `server`, trusting only `ca_pem`. Plaintext
/// `http://` only with `insecure_loopback` and only to this machine.
pub async fn channel(server: &str, ca_pem: &[u8], insecure_loopback: bool) -> Result<Channel> {
    let uri: tonic::transport::Uri = server
        .parse()
        .with_context(|| format!("{server} is not a URL"))?;
    let host = uri
        .host()
        .context("the server URL has no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let mut endpoint = Endpoint::from_shared(server.to_string())
        .with_context(|| format!("{server} is not a URL"))?
        .connect_timeout(std::time::Duration::from_secs(10))
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_while_idle(true);
    match uri.scheme_str() {
        Some("https") => {
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .domain_name(host.clone());
            endpoint = endpoint.tls_config(tls).context("configuring TLS")?;
        }
        Some("http") if is_loopback(&host) && insecure_loopback => {}
        Some("http") if is_loopback(&host) => bail!(
            "{server}: refusing plaintext http:// (the enrolment code and token would travel in clear); use https://, or for a development daemon on this machine `baton init --insecure-loopback`"
        ),
        Some("http") => bail!(
            "{server}: refusing plaintext http:// to a host other than this machine (the enrolment code and token would travel in clear); use https://"
        ),
        _ => bail!("{server}: the URL must start with https://"),
    }
    endpoint
        .connect()
        .await
        .map_err(|e| connect_error(server, &host, &e))
}

/// True for `localhost` and loopback addresses.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The services, with the home's token.
pub struct Clients {
    /// Directory service.
    pub directory: DirectoryClient<Authed>,
    /// Exchange service.
    pub exchange: ExchangeClient<Authed>,
}

/// Connects with the home's server, CA and token.
pub async fn connect(home: &Home) -> Result<Clients> {
    let config = home.config()?;
    let channel = channel(&config.server, &home.ca()?, config.insecure_loopback).await?;
    let token = home.token()?;
    let value: MetadataValue<tonic::metadata::Ascii> = format!("Bearer {token}")
        .parse()
        .context("the token file holds characters a token cannot")?;
    let bearer = Bearer(value);
    Ok(Clients {
        directory: DirectoryClient::with_interceptor(channel.clone(), bearer.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
        exchange: ExchangeClient::with_interceptor(channel, bearer)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    })
}

/// An unauthenticated enrolment client.
pub async fn enrolment(
    server: &str,
    ca_pem: &[u8],
    insecure_loopback: bool,
) -> Result<EnrolmentClient<Channel>> {
    Ok(EnrolmentClient::new(
        channel(server, ca_pem, insecure_loopback).await?,
    ))
}

/// Turns a gRPC status into a message for a person, keeping the server's
/// words and adding what to do; never a raw status code.
pub fn explain(status: &tonic::Status) -> String {
    use tonic::Code;
    let message = status.message();
    let hint = match status.code() {
        Code::Unauthenticated => {
            " (the token was refused: was this device's key revoked? ask your operator for a new enrolment code and run `baton init --reenrol`)"
        }
        Code::Unavailable | Code::Unknown | Code::Internal if message.contains("h2 protocol") => {
            " (the server did not speak Baton's protocol: is the URL https:// and the port batond's?)"
        }
        Code::Unavailable => {
            " (the server cannot be reached: is batond running, and is the URL right?)"
        }
        Code::Unimplemented => {
            " (the server is older than this baton: ask the operator to upgrade batond)"
        }
        _ => "",
    };
    let message = if message.is_empty() {
        "no reason given"
    } else {
        message
    };
    format!("{message}{hint}")
}

/// True when a gRPC failure means the server could not be reached at all, so
/// every other call would fail the same way.
pub fn unreachable(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
}

/// Turns a failure to connect into a message for a person: a certificate
/// that the CA did not sign, one that does not cover the host, a plaintext
/// server, or nothing listening.
fn connect_error(server: &str, host: &str, err: &tonic::transport::Error) -> anyhow::Error {
    let mut chain = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        chain.push_str(&e.to_string());
        chain.push(' ');
        source = e.source();
    }
    let why = if chain.contains("NotValidForName") || chain.contains("CertNotValidForName") {
        format!(
            "the server's certificate does not cover the name {host}: ask the trust's operator to add it (`batond serve --tls-name {host}`), or use the name it covers"
        )
    } else if chain.contains("BadSignature")
        || chain.contains("UnknownIssuer")
        || chain.contains("invalid peer certificate")
    {
        "the server's certificate is not signed by the CA given: check that --ca is the ca.pem of this server (batond's DATA_DIR/tls/ca.pem)".to_string()
    } else if chain.contains("InvalidContentType")
        || chain.contains("CorruptMessage")
        || chain.contains("wrong version number")
    {
        "the server did not answer with TLS: is this batond's port?".to_string()
    } else if chain.contains("Connection refused") || chain.contains("ConnectionRefused") {
        "nothing is listening there: is batond running, and is the URL right?".to_string()
    } else if chain.contains("timed out") || chain.contains("Timeout") {
        "no answer within 10 seconds: is the host right, and is the port open?".to_string()
    } else if chain.contains("dns error") || chain.contains("failed to lookup") {
        format!("the name {host} could not be found: check the URL")
    } else {
        chain.trim().to_string()
    };
    anyhow::anyhow!("cannot connect to {server}: {why}")
}
