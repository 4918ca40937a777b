//! The response body a [`Channel`](super::Channel) returns: buffered data, then trailers.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

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

/// Reads a whole body: its data as one `Bytes` and its trailers, if it had any.
///
/// A body that arrives in one frame (a `Full`, an axum response, a [`MeshBody`]) is handed
/// over without a copy or a buffer list, which is what `BodyExt::collect` would allocate.
pub(crate) async fn read_to_end<B: Body<Data = Bytes>>(
    body: B,
) -> Result<(Bytes, Option<HeaderMap>), B::Error> {
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    let mut trailers: Option<HeaderMap> = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame?.into_data() {
            Ok(chunk) => {
                match (&mut rest, first.take()) {
                    (Some(rest), _) => rest.extend_from_slice(&chunk),
                    (None, None) => first = Some(chunk),
                    (None, Some(earlier)) => {
                        let mut joined = BytesMut::with_capacity(earlier.len() + chunk.len());
                        joined.extend_from_slice(&earlier);
                        joined.extend_from_slice(&chunk);
                        rest = Some(joined);
                    }
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(more) = frame.into_trailers() {
            match &mut trailers {
                Some(trailers) => trailers.extend(more),
                None => trailers = Some(more),
            }
        }
    }
    let data = match rest {
        Some(joined) => joined.freeze(),
        None => first.unwrap_or_default(),
    };
    Ok((data, trailers))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A body in several frames, then two trailer frames.
    struct Chunked(Vec<Frame<Bytes>>);

    impl Body for Chunked {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready((!self.0.is_empty()).then(|| Ok(self.0.remove(0))))
        }
    }

    #[tokio::test]
    async fn read_to_end_joins_frames_and_merges_trailers() {
        let trailer = |name: &'static str, value: &'static str| {
            let mut map = HeaderMap::new();
            map.insert(name, value.parse().expect("value"));
            Frame::trailers(map)
        };
        let body = Chunked(vec![
            Frame::data(Bytes::from_static(b"ab")),
            Frame::data(Bytes::from_static(b"c")),
            Frame::data(Bytes::from_static(b"de")),
            trailer("grpc-status", "0"),
            trailer("grpc-message", "ok"),
        ]);
        let (data, trailers) = read_to_end(body).await.expect("infallible");
        assert_eq!(data, Bytes::from_static(b"abcde"));
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["grpc-message"], "ok");

        let one = Bytes::from_static(b"whole");
        let (data, trailers) = read_to_end(http_body_util::Full::new(one.clone()))
            .await
            .expect("infallible");
        assert_eq!(
            data.as_ptr(),
            one.as_ptr(),
            "one frame is handed over, not copied"
        );
        assert!(trailers.is_none());

        let (data, trailers) = read_to_end(MeshBody::empty()).await.expect("infallible");
        assert!(data.is_empty() && trailers.is_none());
    }

    #[test]
    fn empty_body_is_at_its_end() {
        assert!(MeshBody::empty().is_end_stream());
    }
}
