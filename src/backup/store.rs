//! The bucket: an S3 client from `spec.backup.s3` (any S3-compatible endpoint), streaming
//! multipart uploads, listing, reading and deleting objects.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::Error;
use crate::crd::S3Location;

/// Parts of a multipart upload: S3's minimum part size is 5 MiB (except the last).
pub const PART_SIZE: usize = 8 << 20;

/// Static credentials (from a Secret, or the environment locally).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticCredentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN`.
    pub session_token: Option<String>,
}

impl StaticCredentials {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`) when both
    /// are set.
    pub fn from_env() -> Option<Self> {
        Self::from_env_prefixed("")
    }

    /// The same variables with `prefix` before their names.
    pub fn from_env_prefixed(prefix: &str) -> Option<Self> {
        let get = |k: &str| {
            std::env::var(format!("{prefix}{k}"))
                .ok()
                .filter(|v| !v.is_empty())
        };
        Some(Self {
            access_key_id: get("AWS_ACCESS_KEY_ID")?,
            secret_access_key: get("AWS_SECRET_ACCESS_KEY")?,
            session_token: get("AWS_SESSION_TOKEN"),
        })
    }
}

/// A bucket and the prefix every key of one cluster lives under: `<prefix><namespace>/<name>/`
/// (the namespace keeps same-named clusters of two namespaces sharing a bucket apart).
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    bucket: String,
    /// `<prefix><namespace>/<cluster>/`.
    pub prefix: String,
}

fn s3_error<E: std::fmt::Display>(op: &'static str, bucket: &str) -> impl Fn(E) -> Error {
    let bucket = bucket.to_owned();
    move |e| Error::Store {
        op,
        bucket: bucket.clone(),
        message: e.to_string(),
    }
}

/// The SDK's error with its service code and message, which its `Display` leaves out.
fn sdk_message<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e {
        aws_sdk_s3::error::SdkError::ServiceError(s) => {
            let err = s.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("error"),
                err.message().unwrap_or("no message")
            )
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

impl Store {
    /// A client for `location` with `credentials`, or the default AWS chain without them,
    /// for the backups of cluster `name` in `namespace`.
    pub async fn new(
        location: &S3Location,
        namespace: &str,
        name: &str,
        credentials: Option<StaticCredentials>,
    ) -> Self {
        use aws_config::BehaviorVersion;
        let region = location
            .region
            .clone()
            .unwrap_or_else(|| "us-east-1".to_owned());
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(region));
        if let Some(c) = credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                c.access_key_id,
                c.secret_access_key,
                c.session_token,
                None,
                "etcd-operator",
            ));
        }
        let shared = loader.load().await;
        let mut config =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(location.force_path_style);
        if let Some(endpoint) = &location.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let mut prefix = location.prefix.clone().unwrap_or_default();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self {
            client: Client::from_conf(config.build()),
            bucket: location.bucket.clone(),
            prefix: format!("{prefix}{namespace}/{name}/"),
        }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Stores `body` at `key` in one request (small objects: the metadata).
    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), Error> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| sdk_message(&e))
            .map_err(s3_error("put", &self.bucket))?;
        Ok(())
    }

    /// Starts a multipart upload of `key`.
    pub async fn start_upload(&self, key: &str) -> Result<Upload<'_>, Error> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_message(&e))
            .map_err(s3_error("start an upload to", &self.bucket))?;
        let id = created.upload_id().unwrap_or_default().to_owned();
        Ok(Upload {
            store: self,
            key: key.to_owned(),
            id,
            parts: Vec::new(),
            inflight: None,
        })
    }

    /// The whole object at `key` (small ones: metadata).
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, Error> {
        let bytes = self
            .get_stream(key)
            .await?
            .collect()
            .await
            .map_err(s3_error("read from", &self.bucket))?;
        Ok(bytes.into_bytes().to_vec())
    }

    /// Checks that the bucket exists and these credentials may list the cluster's prefix
    /// (`ListObjectsV2`, one key), so a backup fails with the store's reason before a member
    /// streams a snapshot for nothing, and a store that would create a missing bucket on
    /// upload does not hide a typo. (Listing under the prefix is what retention needs anyway,
    /// and what policies scoped by `s3:prefix` allow.)
    pub async fn check(&self) -> Result<(), Error> {
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .max_keys(1)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_message(&e))
            .map_err(s3_error("reach", &self.bucket))
    }

    /// The object at `key` as a stream of chunks, for reading large objects without holding
    /// them whole.
    pub async fn get_stream(&self, key: &str) -> Result<ByteStream, Error> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_message(&e))
            .map_err(s3_error("read from", &self.bucket))?;
        Ok(out.body)
    }

    /// Every key directly under the cluster's prefix (not in deeper "folders") with its size.
    pub async fn list(&self) -> Result<Vec<(String, i64)>, Error> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .delimiter("/")
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| sdk_message(&e))
                .map_err(s3_error("list", &self.bucket))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push((k.to_owned(), o.size().unwrap_or_default()));
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated().unwrap_or(false) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_message(&e))
            .map_err(s3_error("delete from", &self.bucket))?;
        Ok(())
    }
}

/// A multipart upload in progress. Dropped without [`Upload::finish`], it leaves the parts
/// for [`Upload::abort`] (or the bucket's lifecycle rules) to remove; nothing is visible at
/// its key until it finishes.
pub struct Upload<'a> {
    store: &'a Store,
    key: String,
    id: String,
    parts: Vec<CompletedPart>,
    /// The part being sent while the caller fills the next: reading the snapshot and
    /// uploading overlap, and memory stays at two parts.
    inflight: Option<tokio::task::JoinHandle<Result<CompletedPart, Error>>>,
}

impl Upload<'_> {
    /// Sends the next part (in the background; the one before it must have arrived first).
    pub async fn part(&mut self, bytes: Vec<u8>) -> Result<(), Error> {
        self.settle().await?;
        let number = self.parts.len() as i32 + 1;
        let s = self.store;
        let request = s
            .client
            .upload_part()
            .bucket(&s.bucket)
            .key(&self.key)
            .upload_id(&self.id)
            .part_number(number)
            .body(ByteStream::from(bytes));
        let bucket = s.bucket.clone();
        self.inflight = Some(tokio::spawn(async move {
            let out = request
                .send()
                .await
                .map_err(|e| sdk_message(&e))
                .map_err(s3_error("upload a part to", &bucket))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .build())
        }));
        Ok(())
    }

    /// Waits for the part in flight.
    async fn settle(&mut self) -> Result<(), Error> {
        if let Some(task) = self.inflight.take() {
            let part = task.await.map_err(|e| Error::Store {
                op: "upload a part to",
                bucket: self.store.bucket.clone(),
                message: e.to_string(),
            })??;
            self.parts.push(part);
        }
        Ok(())
    }

    /// Completes the upload: the object appears at its key. When that fails the upload is
    /// abandoned, so no parts are left behind.
    pub async fn finish(mut self) -> Result<(), Error> {
        if let Err(e) = self.settle().await {
            self.abort().await;
            return Err(e);
        }
        let s = self.store;
        let done = s
            .client
            .complete_multipart_upload()
            .bucket(&s.bucket)
            .key(&self.key)
            .upload_id(&self.id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut self.parts)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_message(&e))
            .map_err(s3_error("complete an upload to", &s.bucket));
        if done.is_err() {
            self.abort().await;
        }
        done.map(|_| ())
    }

    /// Abandons the upload and its parts.
    pub async fn abort(mut self) {
        if let Some(task) = self.inflight.take() {
            task.abort();
        }
        let s = self.store;
        let _ = s
            .client
            .abort_multipart_upload()
            .bucket(&s.bucket)
            .key(&self.key)
            .upload_id(&self.id)
            .send()
            .await;
    }
}
