//! The floating resources: an Elastic IP, a Route53 record, the leader parameter in SSM.
//!
//! Each can be *observed* (who holds it now?) and *claimed* (make it point here). Claims are
//! idempotent: claiming a resource that already points here changes nothing. The core decides
//! when to call which; these adapters only talk to AWS.

use std::net::Ipv4Addr;

use aws_sdk_ec2::Client as Ec2;
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
};
use aws_sdk_route53::Client as Route53;
use aws_sdk_ssm::types::ParameterType;
use aws_sdk_ssm::Client as Ssm;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::{sleep, Duration, Instant};

use super::{CloudError, Identity};
use crate::config::{RecordType, RecordValue, Settings};

/// What an observation found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub points_here: bool,
    /// Where it points, for humans: an interface and address, record values, a node.
    pub description: String,
}

/// An Elastic IP, associated to an interface and private address (or to the instance).
pub struct ElasticIp {
    client: Ec2,
    pub allocation_id: String,
    network_interface_id: String,
    private_ip: Ipv4Addr,
}

impl ElasticIp {
    pub async fn observe(&self) -> Result<Holder, CloudError> {
        const ACTION: &str = "ec2:DescribeAddresses";
        let out = self
            .client
            .describe_addresses()
            .allocation_ids(&self.allocation_id)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk(ACTION, e))?;
        let Some(address) = out.addresses().first() else {
            return Err(CloudError::other(
                ACTION,
                format!("no Elastic IP with allocation id {}", self.allocation_id),
            ));
        };
        let eni = address.network_interface_id().unwrap_or_default();
        let private = address.private_ip_address().unwrap_or_default();
        let points_here =
            eni == self.network_interface_id && private == self.private_ip.to_string();
        let description = match (address.association_id(), address.instance_id()) {
            (None, _) => "not associated".to_string(),
            (Some(_), Some(instance)) if !instance.is_empty() => {
                format!("{eni} {private} ({instance})")
            }
            (Some(_), _) => format!("{eni} {private}"),
        };
        Ok(Holder {
            points_here,
            description,
        })
    }

    pub async fn claim(&self) -> Result<(), CloudError> {
        const ACTION: &str = "ec2:AssociateAddress";
        self.client
            .associate_address()
            .allocation_id(&self.allocation_id)
            .network_interface_id(&self.network_interface_id)
            .private_ip_address(self.private_ip.to_string())
            .allow_reassociation(true)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk(ACTION, e))?;
        Ok(())
    }
}

/// A Route53 record set that must hold this node's value.
pub struct Route53Record {
    client: Route53,
    pub zone: String,
    pub name: String,
    record_type: RecordType,
    ttl: i64,
    value: String,
    /// The last change we submitted, until Route53 reports it in sync.
    pending_change: Mutex<Option<String>>,
}

impl Route53Record {
    fn rr_type(&self) -> RrType {
        RrType::from(self.record_type.as_str())
    }

    pub async fn observe(&self) -> Result<Holder, CloudError> {
        const ACTION: &str = "route53:ListResourceRecordSets";
        let out = self
            .client
            .list_resource_record_sets()
            .hosted_zone_id(&self.zone)
            .start_record_name(&self.name)
            .start_record_type(self.rr_type())
            .max_items(1)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk(ACTION, e))?;
        let found = out.resource_record_sets().first().filter(|set| {
            normalise(set.name()) == self.name && set.r#type().as_str() == self.record_type.as_str()
        });
        let values: Vec<String> = found
            .map(|set| {
                set.resource_records()
                    .iter()
                    .map(|r| r.value().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let points_here = values.len() == 1 && values[0] == self.value;
        let mut description = if values.is_empty() {
            "no record".to_string()
        } else {
            values.join(", ")
        };
        if points_here {
            if let Some(state) = self.sync_state().await? {
                description.push_str(&format!(" ({state})"));
            }
        }
        Ok(Holder {
            points_here,
            description,
        })
    }

    /// Whether our last change has reached every Route53 server yet (`GetChange`).
    async fn sync_state(&self) -> Result<Option<&'static str>, CloudError> {
        let mut pending = self.pending_change.lock().await;
        let Some(id) = pending.clone() else {
            return Ok(None);
        };
        let status = self.change_status(&id).await?;
        if status == ChangeStatus::Insync {
            *pending = None;
            Ok(Some("in sync"))
        } else {
            Ok(Some("propagating"))
        }
    }

    async fn change_status(&self, id: &str) -> Result<ChangeStatus, CloudError> {
        const ACTION: &str = "route53:GetChange";
        let out = self
            .client
            .get_change()
            .id(id)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk(ACTION, e))?;
        Ok(out
            .change_info()
            .map(|info| info.status().clone())
            .unwrap_or(ChangeStatus::Pending))
    }

    /// UPSERTs the record, then polls `GetChange` until `INSYNC` while the call's deadline
    /// allows. Route53 has accepted the change once the UPSERT returns; real Route53 answers
    /// `PENDING` for tens of seconds, so a change still pending at the deadline counts as
    /// claimed, and later observations keep checking it until it is in sync.
    pub async fn claim(&self, deadline: Instant) -> Result<(), CloudError> {
        const ACTION: &str = "route53:ChangeResourceRecordSets";
        let build =
            |e: aws_sdk_route53::error::BuildError| CloudError::other(ACTION, e.to_string());
        let record = ResourceRecordSet::builder()
            .name(&self.name)
            .r#type(self.rr_type())
            .ttl(self.ttl)
            .resource_records(
                ResourceRecord::builder()
                    .value(&self.value)
                    .build()
                    .map_err(build)?,
            )
            .build()
            .map_err(build)?;
        let batch = ChangeBatch::builder()
            .comment("ha-agent: leader takes over")
            .changes(
                Change::builder()
                    .action(ChangeAction::Upsert)
                    .resource_record_set(record)
                    .build()
                    .map_err(build)?,
            )
            .build()
            .map_err(build)?;
        let out = self
            .client
            .change_resource_record_sets()
            .hosted_zone_id(&self.zone)
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk(ACTION, e))?;
        let Some(info) = out.change_info() else {
            return Ok(());
        };
        let id = info.id().to_string();
        *self.pending_change.lock().await = Some(id.clone());
        let mut status = info.status().clone();
        let mut wait = Duration::from_millis(50);
        loop {
            if status == ChangeStatus::Insync {
                *self.pending_change.lock().await = None;
                break;
            }
            // Leave room for one GetChange round trip before the deadline.
            if Instant::now() + wait * 3 >= deadline {
                break;
            }
            sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
            status = self.change_status(&id).await?;
        }
        Ok(())
    }
}

/// The document the leader keeps in `[aws] leader-parameter`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    pub cluster: String,
    pub node_id: u64,
    pub instance_id: String,
    pub term: u64,
    /// RFC 3339, when this node became leader.
    pub since: String,
}

/// An SSM parameter naming the current leader, for other systems to read.
pub struct LeaderParameter {
    client: Ssm,
    pub name: String,
    record: std::sync::Mutex<LeaderRecord>,
}

impl LeaderParameter {
    /// Sets the term and start of the leadership to publish.
    pub fn set_leadership(&self, term: u64, since: String) {
        let mut record = self
            .record
            .lock()
            .expect("never poisoned: no panics while held");
        record.term = term;
        record.since = since;
    }

    fn current(&self) -> LeaderRecord {
        self.record
            .lock()
            .expect("never poisoned: no panics while held")
            .clone()
    }

    pub async fn observe(&self) -> Result<Holder, CloudError> {
        const ACTION: &str = "ssm:GetParameter";
        let wanted = self.current();
        let result = self.client.get_parameter().name(&self.name).send().await;
        let value = match result {
            Ok(out) => out
                .parameter()
                .and_then(|p| p.value())
                .unwrap_or_default()
                .to_string(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found()) =>
            {
                return Ok(Holder {
                    points_here: false,
                    description: "no parameter".into(),
                })
            }
            Err(e) => return Err(CloudError::from_sdk(ACTION, e)),
        };
        Ok(match serde_json::from_str::<LeaderRecord>(&value) {
            Ok(found) => Holder {
                points_here: found.node_id == wanted.node_id && found.term == wanted.term,
                description: format!("node {} term {}", found.node_id, found.term),
            },
            Err(_) => Holder {
                points_here: false,
                description: "not an ha-agent leader record".into(),
            },
        })
    }

    pub async fn claim(&self) -> Result<(), CloudError> {
        const ACTION: &str = "ssm:PutParameter";
        let body = serde_json::to_string(&self.current()).expect("leader records serialise");
        self.client
            .put_parameter()
            .name(&self.name)
            .value(body)
            .r#type(ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk(ACTION, e))?;
        Ok(())
    }
}

/// One floating resource of any kind.
pub enum FloatingResource {
    ElasticIp(ElasticIp),
    Route53(Route53Record),
    LeaderParameter(LeaderParameter),
}

impl FloatingResource {
    /// `elastic-ip`, `route53-record`, `leader-parameter`.
    pub fn kind(&self) -> &'static str {
        match self {
            FloatingResource::ElasticIp(_) => "elastic-ip",
            FloatingResource::Route53(_) => "route53-record",
            FloatingResource::LeaderParameter(_) => "leader-parameter",
        }
    }

    /// The resource's identifier as configured.
    pub fn id(&self) -> String {
        match self {
            FloatingResource::ElasticIp(eip) => eip.allocation_id.clone(),
            FloatingResource::Route53(r) => format!("{} {}", r.zone, r.name),
            FloatingResource::LeaderParameter(p) => p.name.clone(),
        }
    }

    pub async fn observe(&self) -> Result<Holder, CloudError> {
        match self {
            FloatingResource::ElasticIp(r) => r.observe().await,
            FloatingResource::Route53(r) => r.observe().await,
            FloatingResource::LeaderParameter(r) => r.observe().await,
        }
    }

    /// Makes the resource point here; `deadline` is when the caller gives up.
    pub async fn claim(&self, deadline: Instant) -> Result<(), CloudError> {
        match self {
            FloatingResource::ElasticIp(r) => r.claim().await,
            FloatingResource::Route53(r) => r.claim(deadline).await,
            FloatingResource::LeaderParameter(r) => r.claim().await,
        }
    }
}

/// Record names compare in lower case with a trailing dot.
fn normalise(name: &str) -> String {
    let mut name = name.to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    name
}

/// Builds the configured resources, in a fixed order: Elastic IPs, records, leader parameter.
pub fn build(
    settings: &Settings,
    identity: &Identity,
    config: &aws_config::SdkConfig,
) -> Result<Vec<FloatingResource>, String> {
    let ec2 = Ec2::new(config);
    let route53 = Route53::new(config);
    let mut resources = Vec::new();
    for eip in &settings.elastic_ips {
        resources.push(FloatingResource::ElasticIp(ElasticIp {
            client: ec2.clone(),
            allocation_id: eip.allocation_id.clone(),
            network_interface_id: eip
                .network_interface_id
                .clone()
                .unwrap_or_else(|| identity.network_interface_id.clone()),
            private_ip: eip.private_ip.unwrap_or(identity.private_ip),
        }));
    }
    for (index, record) in settings.route53_records.iter().enumerate() {
        let value = match record.value {
            RecordValue::PrivateIp => identity.private_ip.to_string(),
            RecordValue::PublicIp => match identity.public_ip {
                Some(ip) => ip.to_string(),
                None => {
                    return Err(format!(
                        "route53-record[{index}].value = \"public-ip\", but this instance has no public IP \
                         (set [aws] public-ip, or use value = \"node\" with [node] record-value)"
                    ))
                }
            },
            RecordValue::Node => {
                let value = settings.node.record_value.clone().unwrap_or_default();
                if record.record_type == RecordType::Txt && !value.starts_with('"') {
                    // Route53 wants TXT values in quotes.
                    format!("\"{}\"", value.replace('"', "\\\""))
                } else {
                    value
                }
            }
        };
        resources.push(FloatingResource::Route53(Route53Record {
            client: route53.clone(),
            zone: record.hosted_zone_id.clone(),
            name: normalise(&record.name),
            record_type: record.record_type,
            ttl: record.ttl,
            value,
            pending_change: Mutex::new(None),
        }));
    }
    if let Some(name) = &settings.aws.leader_parameter {
        resources.push(FloatingResource::LeaderParameter(LeaderParameter {
            client: Ssm::new(config),
            name: name.clone(),
            record: std::sync::Mutex::new(LeaderRecord {
                cluster: settings.cluster.name.clone(),
                node_id: settings.node.id,
                instance_id: identity.instance_id.clone(),
                term: 0,
                since: String::new(),
            }),
        }));
    }
    Ok(resources)
}

/// Reads the cluster secret from an SSM SecureString parameter (the raw value).
pub async fn fetch_secret(
    config: &aws_config::SdkConfig,
    name: &str,
) -> Result<String, CloudError> {
    const ACTION: &str = "ssm:GetParameter";
    let out = Ssm::new(config)
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| CloudError::from_sdk(ACTION, e))?;
    let value = out
        .parameter()
        .and_then(|p| p.value())
        .ok_or_else(|| CloudError::other(ACTION, format!("parameter {name} has no value")))?;
    Ok(value.to_string())
}
