//! Where user-service's failures become HTTP answers.

use kit::api::ApiError;
use middleware::password::PasswordError;

use crate::store::StoreError;

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::EmailTaken => {
                ApiError::conflict("email_taken", "an account with this email already exists")
            }
            StoreError::Database(error) => database(error),
        }
    }
}

pub fn database(error: sqlx::Error) -> ApiError {
    ApiError::database(error, "user")
}

pub fn password(error: PasswordError) -> ApiError {
    ApiError::internal(error)
}
