//! The ACME cache directory: the account key and the certificates, per
//! ACME directory (staging and production never mix), written 0600 in a
//! 0700 directory, atomically (temp file + rename) so a crash never leaves
//! half a key.
//!
//! Layout: `<cache>/<directory>/account.json` and
//! `<cache>/<directory>/<domains>/{cert.pem,key.pem}`.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("ACME cache {path}: {source}")]
pub struct CacheError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
    certs: PathBuf,
}

impl Cache {
    pub fn new(root: &Path, directory_url: &str, domains: &[String]) -> Cache {
        let dir = root.join(slug(
            directory_url
                .trim_start_matches("https://")
                .trim_start_matches("http://"),
        ));
        let certs = dir.join(slug(&domains.join(",")));
        Cache { dir, certs }
    }

    pub fn account_path(&self) -> PathBuf {
        self.dir.join("account.json")
    }

    pub fn cert_path(&self) -> PathBuf {
        self.certs.join("cert.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.certs.join("key.pem")
    }

    /// `Ok(None)` when the file does not exist.
    pub async fn read(path: &Path) -> Result<Option<Vec<u8>>, CacheError> {
        match tokio::fs::read(path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CacheError {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes `bytes` to `path` with mode 0600 (directories 0700), atomically.
    pub async fn write(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
        let path = path.to_owned();
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || write_private(&path, &bytes))
            .await
            .map_err(|e| CacheError {
                path: PathBuf::new(),
                source: std::io::Error::other(e),
            })?
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    use std::io::Write;
    let fail = |source| CacheError {
        path: path.to_owned(),
        source,
    };
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(parent).map_err(fail)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(fail)
}

/// A file-name-safe rendering: `[A-Za-z0-9.-]` kept, `*` spelled out, the rest `_`.
fn slug(text: &str) -> String {
    text.replace('*', "wildcard")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_and_domain_sets_get_their_own_paths() {
        let root = Path::new("/cache");
        let staging = Cache::new(
            root,
            "https://acme-staging-v02.api.letsencrypt.org/directory",
            &["a.example".into(), "*.a.example".into()],
        );
        assert_eq!(
            staging.cert_path(),
            Path::new(
                "/cache/acme-staging-v02.api.letsencrypt.org_directory/a.example_wildcard.a.example/cert.pem"
            )
        );
        let production = Cache::new(
            root,
            "https://acme-v02.api.letsencrypt.org/directory",
            &["a.example".into()],
        );
        assert_ne!(staging.account_path(), production.account_path());
    }

    #[tokio::test]
    async fn files_are_written_private() {
        let dir = std::env::temp_dir().join(format!("roomcast-cache-{}", rand::random::<u64>()));
        let path = dir.join("x").join("key.pem");
        Cache::write(&path, b"secret").await.unwrap();
        assert_eq!(Cache::read(&path).await.unwrap().unwrap(), b"secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        assert!(Cache::read(&dir.join("none")).await.unwrap().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
