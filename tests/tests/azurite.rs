//! The Azurite fixture starts the pinned emulator, which answers the Blob API on its own port.

use std::io::{Read, Write};

use clouddp_e2e::azurite::{ACCOUNT, Azurite};

#[tokio::test]
async fn azurite_fixture_serves_the_blob_api_and_stops() {
    let azurite = Azurite::start().await.unwrap();
    let port = azurite.port();
    let response = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            stream,
            "GET /{ACCOUNT}?comp=list HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    })
    .await
    .unwrap();
    assert!(
        response.contains("Server: Azurite-Blob/3.35.0"),
        "{response}"
    );
    assert!(
        response.starts_with("HTTP/1.1 403"),
        "an unsigned request is refused: {response}"
    );
    assert!(response.contains("AuthorizationFailure"), "{response}");
    drop(azurite);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "azurite stopped with its fixture"
    );
}
