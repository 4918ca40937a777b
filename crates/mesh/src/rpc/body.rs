//! The response body a [`Channel`](super::Channel) returns: buffered data, then trailers.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// A whole body received in one message, with the trailers that came with it (gRPC's
/// `grpc-status` and `grpc-message`).
#[derive(Debug, Default, Clone)]
pub struct MeshBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl MeshBody {
    pub fn new(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            data: (!data.is_empty()).then_some(data),
            trailers: trailers.filter(|t| !t.is_empty()),
        }
    }

    pub fn empty() -> Self {
        Self::default()
    }
}

impl From<Bytes> for MeshBody {
    fn from(data: Bytes) -> Self {
        Self::new(data, None)
    }
}

impl From<String> for MeshBody {
    fn from(data: String) -> Self {
        Self::new(Bytes::from(data), None)
    }
}

impl Body for MeshBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn yields_data_then_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().expect("value"));
        let collected = MeshBody::new(Bytes::from_static(b"hi"), Some(trailers))
            .collect()
            .await
            .expect("infallible");
        assert_eq!(
            collected
                .trailers()
                .and_then(|t| t.get("grpc-status"))
                .map(|v| v.as_bytes()),
            Some(&b"0"[..])
        );
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"hi"));
    }

    #[test]
    fn empty_body_is_at_its_end() {
        assert!(MeshBody::empty().is_end_stream());
    }
}
