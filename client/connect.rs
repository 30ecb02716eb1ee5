//! Connecting to the daemon: a TLS channel that trusts only the CA in the
//! home, and typed clients that send the school's token on every call.

use anyhow::{Context as _, Result};
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
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

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

/// Opens a TLS channel to `server`, trusting only `ca_pem`.
pub async fn channel(server: &str, ca_pem: &[u8]) -> Result<Channel> {
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
    if uri.scheme_str() == Some("https") {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .domain_name(host);
        endpoint = endpoint.tls_config(tls).context("configuring TLS")?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {server}"))
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
    let channel = channel(&config.server, &home.ca()?).await?;
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
pub async fn enrolment(server: &str, ca_pem: &[u8]) -> Result<EnrolmentClient<Channel>> {
    Ok(EnrolmentClient::new(channel(server, ca_pem).await?))
}

/// Turns a gRPC status into a message for a person, keeping the server's words.
pub fn explain(status: &tonic::Status) -> String {
    use tonic::Code;
    let hint = match status.code() {
        Code::Unauthenticated => {
            " (the token was refused: was it revoked? ask your operator for a new enrolment code)"
        }
        Code::Unavailable => {
            " (the server cannot be reached: is batond running, and is the URL right?)"
        }
        Code::PermissionDenied => " (not allowed for this school)",
        _ => "",
    };
    format!("{:?}: {}{hint}", status.code(), status.message())
}
