//! The ACME account: loaded from `account.json` in the cache dir, or
//! registered once and stored there (0600) — never a new account per start.

use instant_acme::{Account, AccountCredentials, NewAccount};

use super::AcmeError;
use super::cache::Cache;
use super::http_client::HttpsClient;
use crate::tls::settings::AcmeSettings;

pub async fn load_or_create(
    settings: &AcmeSettings,
    cache: &Cache,
    client: HttpsClient,
) -> Result<Account, AcmeError> {
    let path = cache.account_path();
    let account_error = |source| AcmeError::Account {
        directory: settings.directory.clone(),
        source,
    };
    if let Some(bytes) = Cache::read(&path).await? {
        let credentials: AccountCredentials =
            serde_json::from_slice(&bytes).map_err(|e| AcmeError::BadAccount {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        let account = Account::builder_with_http(Box::new(client))
            .from_credentials(credentials)
            .await
            .map_err(account_error)?;
        tracing::info!(account = account.id(), "using the stored ACME account");
        return Ok(account);
    }
    let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(Box::new(client))
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await
        .map_err(account_error)?;
    let json = serde_json::to_vec_pretty(&credentials).map_err(|e| AcmeError::BadAccount {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Cache::write(&path, &json).await?;
    tracing::info!(account = account.id(), directory = %settings.directory, path = %path.display(), "registered a new ACME account");
    Ok(account)
}
