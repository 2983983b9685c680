//! Instance identity from IMDSv2: token first, short timeouts, clear errors.

use std::net::Ipv4Addr;
use std::time::Duration;

use reqwest::StatusCode;

const TOKEN_TTL_SECONDS: &str = "300";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
const ATTEMPTS: usize = 3;

/// Why the instance metadata service could not tell us who we are.
#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error(
        "cannot reach the instance metadata service at {endpoint} ({reason}); on EC2 check that \
         IMDSv2 is enabled and the hop limit allows this host, elsewhere set [aws] region, \
         instance-id, network-interface-id and private-ip (or aws.imds-endpoint)"
    )]
    Unreachable { endpoint: String, reason: String },
    #[error("the instance metadata service at {endpoint} answered {status} for {path}")]
    Status {
        endpoint: String,
        path: String,
        status: StatusCode,
    },
    #[error("the instance metadata service at {endpoint} returned an unusable {what}: {value:?}")]
    Invalid {
        endpoint: String,
        what: &'static str,
        value: String,
    },
}

/// What IMDS says about this instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceMetadata {
    pub instance_id: String,
    pub region: String,
    pub availability_zone: String,
    pub network_interface_id: String,
    pub private_ip: Ipv4Addr,
    pub public_ip: Option<Ipv4Addr>,
}

/// A small IMDSv2 client.
pub struct Imds {
    endpoint: String,
    http: reqwest::Client,
}

impl Imds {
    pub fn new(endpoint: &str) -> Imds {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()
            .expect("a plain HTTP client always builds");
        Imds {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            http,
        }
    }

    /// Reads the whole identity (a token, then one request per field).
    pub async fn fetch(&self) -> Result<InstanceMetadata, ImdsError> {
        let token = self.token().await?;
        let instance_id = self.get(&token, "instance-id").await?;
        let availability_zone = self.get(&token, "placement/availability-zone").await?;
        let region = match self.get_optional(&token, "placement/region").await? {
            Some(region) => region,
            // Older IMDS versions lack placement/region: derive it from the zone.
            None => availability_zone
                .trim_end_matches(|c: char| c.is_ascii_alphabetic())
                .to_string(),
        };
        let mac = self.get(&token, "mac").await?;
        let network_interface_id = self
            .get(
                &token,
                &format!("network/interfaces/macs/{mac}/interface-id"),
            )
            .await?;
        let private_ip = self.get(&token, "local-ipv4").await?;
        let private_ip = private_ip.parse().map_err(|_| ImdsError::Invalid {
            endpoint: self.endpoint.clone(),
            what: "local-ipv4",
            value: private_ip.clone(),
        })?;
        let public_ip = match self.get_optional(&token, "public-ipv4").await? {
            Some(text) => Some(text.parse().map_err(|_| ImdsError::Invalid {
                endpoint: self.endpoint.clone(),
                what: "public-ipv4",
                value: text.clone(),
            })?),
            None => None,
        };
        Ok(InstanceMetadata {
            instance_id,
            region,
            availability_zone,
            network_interface_id,
            private_ip,
            public_ip,
        })
    }

    async fn token(&self) -> Result<String, ImdsError> {
        let url = format!("{}/latest/api/token", self.endpoint);
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let sent = self
                .http
                .put(&url)
                .header("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS)
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => {
                    return response.text().await.map_err(|e| self.unreachable(e));
                }
                Ok(response) => {
                    return Err(ImdsError::Status {
                        endpoint: self.endpoint.clone(),
                        path: "/latest/api/token".into(),
                        status: response.status(),
                    })
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(ImdsError::Unreachable {
            endpoint: self.endpoint.clone(),
            reason: last,
        })
    }

    async fn get(&self, token: &str, path: &str) -> Result<String, ImdsError> {
        self.get_optional(token, path)
            .await?
            .ok_or_else(|| ImdsError::Status {
                endpoint: self.endpoint.clone(),
                path: format!("/latest/meta-data/{path}"),
                status: StatusCode::NOT_FOUND,
            })
    }

    async fn get_optional(&self, token: &str, path: &str) -> Result<Option<String>, ImdsError> {
        let url = format!("{}/latest/meta-data/{path}", self.endpoint);
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match self
                .http
                .get(&url)
                .header("X-aws-ec2-metadata-token", token)
                .send()
                .await
            {
                Ok(response) if response.status() == StatusCode::NOT_FOUND => return Ok(None),
                Ok(response) if response.status().is_success() => {
                    let text = response.text().await.map_err(|e| self.unreachable(e))?;
                    return Ok(Some(text.trim().to_string()));
                }
                Ok(response) => {
                    return Err(ImdsError::Status {
                        endpoint: self.endpoint.clone(),
                        path: format!("/latest/meta-data/{path}"),
                        status: response.status(),
                    })
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(ImdsError::Unreachable {
            endpoint: self.endpoint.clone(),
            reason: last,
        })
    }

    fn unreachable(&self, e: reqwest::Error) -> ImdsError {
        ImdsError::Unreachable {
            endpoint: self.endpoint.clone(),
            reason: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A stand-in IMDS that insists on the token, as IMDSv2 does.
    async fn serve(listener: TcpListener) {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let line = request.lines().next().unwrap_or_default().to_string();
                let has_token = request
                    .to_ascii_lowercase()
                    .contains("x-aws-ec2-metadata-token: tok");
                let (status, body) = if line.starts_with("PUT /latest/api/token") {
                    ("200 OK", "tok".to_string())
                } else if !has_token {
                    ("401 Unauthorized", String::new())
                } else {
                    let path = line.split_whitespace().nth(1).unwrap_or_default();
                    match path.trim_start_matches("/latest/meta-data/") {
                        "instance-id" => ("200 OK", "i-0123456789abcdef0".into()),
                        "placement/availability-zone" => ("200 OK", "eu-west-1b".into()),
                        "mac" => ("200 OK", "0a:00:00:00:00:01".into()),
                        "network/interfaces/macs/0a:00:00:00:00:01/interface-id" => {
                            ("200 OK", "eni-0abc".into())
                        }
                        "local-ipv4" => ("200 OK", "10.0.1.10".into()),
                        _ => ("404 Not Found", String::new()),
                    }
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    }

    #[tokio::test]
    async fn reads_identity_with_a_token_and_derives_a_missing_region() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(serve(listener));
        let meta = Imds::new(&endpoint).fetch().await.unwrap();
        assert_eq!(
            meta,
            InstanceMetadata {
                instance_id: "i-0123456789abcdef0".into(),
                region: "eu-west-1".into(),
                availability_zone: "eu-west-1b".into(),
                network_interface_id: "eni-0abc".into(),
                private_ip: "10.0.1.10".parse().unwrap(),
                public_ip: None,
            }
        );
        server.abort();
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_says_what_to_configure() {
        let (_refusing, addr) = crate::test_support::refusing_port();
        let err = Imds::new(&format!("http://{addr}"))
            .fetch()
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ImdsError::Unreachable { .. }), "{text}");
        assert!(
            text.contains("instance-id") && text.contains("127.0.0.1"),
            "{text}"
        );
    }
}
