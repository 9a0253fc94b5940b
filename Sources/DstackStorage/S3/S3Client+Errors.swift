import Foundation

/// What an S3 error response says: the `<Error>` document, or what the status implies when there is none (HEAD).
struct S3ErrorInfo: Sendable {
    /// Error codes worth another attempt besides 5xx and 429.
    static let retryableCodes: Set<String> = [
        "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
        "RequestLimitExceeded", "TooManyRequests", "RequestTimeout", "InternalError", "ServiceUnavailable",
    ]

    /// The HTTP status.
    var status: Int
    /// The S3 error code (`NoSuchBucket`), or one derived from the status.
    var code: String
    /// The server's message, if any.
    var message: String
    /// The bucket's real region, when the server says (`<Region>` or `x-amz-bucket-region`).
    var region: String?
    /// The server's clock, when the server says (`<ServerTime>` or the `Date` header).
    var serverTime: String?

    /// Reads the error out of `response`.
    init(_ response: S3HTTPResponse) {
        status = response.status
        let document = S3XMLElement.parse(response.body)
        let error = document?.name == "Error" ? document : document?.child("Error")
        code = error?.text(of: "Code") ?? Self.code(forStatus: response.status)
        message = error?.text(of: "Message") ?? ""
        region = error?.text(of: "Region") ?? response.headers["x-amz-bucket-region"]
        serverTime = error?.text(of: "ServerTime") ?? response.headers["date"]
    }

    /// Whether trying again may help.
    var isRetryable: Bool {
        status >= 500 || status == 429 || Self.retryableCodes.contains(code)
    }

    private static func code(forStatus status: Int) -> String {
        switch status {
        case 301, 307: return "PermanentRedirect"
        case 403: return "Forbidden"
        case 404: return "NotFound"
        case 412: return "PreconditionFailed"
        case 429: return "TooManyRequests"
        case 503: return "ServiceUnavailable"
        default: return "HTTP\(status)"
        }
    }
}

extension S3Client {
    /// Where requests go, for messages.
    var endpointDescription: String {
        configuration.endpoint?.absoluteString ?? "https://s3.\(configuration.region).amazonaws.com"
    }

    /// The error for an S3 error response that the caller did not expect.
    func failure(_ error: S3ErrorInfo, request: S3Request, attempts: Int) -> StorageError {
        let keyId = configuration.credentials.accessKeyId
        let source = configuration.credentialSource
        let bucket = configuration.bucket
        let what = "\(request.method) \(describe(request.key))"
        let detail = error.message.isEmpty ? "" : " (\(error.message))"
        switch error.code {
        case "NoSuchBucket":
            return unusable(
                "bucket '\(bucket)' does not exist at \(endpointDescription): create it, or fix the bucket name "
                    + "in the storage URL")
        case "InvalidAccessKeyId", "InvalidClientTokenId":
            return unusable(
                "the server does not know access key id '\(keyId)' (from \(source)): check the key id, and that "
                    + "it belongs to \(endpointDescription)")
        case "SignatureDoesNotMatch":
            return unusable(
                "the secret access key does not match access key id '\(keyId)' (from \(source)): set the secret "
                    + "that belongs to this key id")
        case "InvalidToken", "ExpiredToken", "TokenRefreshRequired":
            return unusable(
                "the session token of access key id '\(keyId)' (from \(source)) is invalid or expired: get new "
                    + "temporary credentials (AWS_SESSION_TOKEN)")
        case "RequestTimeTooSkewed":
            let server = error.serverTime.map { " (the server's time is \($0))" } ?? ""
            return unusable(
                "this machine's clock is too far from the server's\(server), so S3 refuses the signed request: "
                    + "fix the clock (for example turn on NTP with 'timedatectl set-ntp true') and try again")
        case "AccessDenied", "AllAccessDisabled", "Forbidden":
            return unusable(
                "access denied to \(what) for access key id '\(keyId)' (from \(source))\(detail): check that the "
                    + "credentials are right and may read, write, list and delete in bucket '\(bucket)'")
        case "AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraintException":
            if let region = error.region, region != configuration.region {
                return unusable(
                    "bucket '\(bucket)' is in region '\(region)', not '\(configuration.region)': set "
                        + "AWS_REGION=\(region) (or region in ~/.aws/config)")
            }
            return unusable(
                "\(what) was refused with \(error.code)\(detail): check the region ('\(configuration.region)') "
                    + "and the endpoint (\(endpointDescription))")
        default:
            if error.isRetryable {
                return unusable(
                    "\(what) kept failing with HTTP \(error.status) \(error.code)\(detail) after \(attempts) "
                        + "attempts at \(endpointDescription): the server is overloaded or failing, try again later")
            }
            return unusable("\(what) failed with HTTP \(error.status) \(error.code)\(detail)")
        }
    }

    /// The error for a request that never got an HTTP answer.
    func unreachable(_ error: URLError, attempts: Int) -> StorageError {
        let tries = attempts > 1 ? " (\(attempts) attempts)" : ""
        switch error.code {
        case .cannotConnectToHost:
            return unusable(
                "cannot connect to \(endpointDescription) (connection refused)\(tries): check that the S3 server "
                    + "is running and the endpoint is right (AWS_ENDPOINT_URL, or endpoint: in .dstack/config.yaml)")
        case .cannotFindHost, .dnsLookupFailed:
            return unusable(
                "cannot resolve the host of \(endpointDescription)\(tries): check the endpoint URL and the network")
        case .timedOut:
            return unusable("\(endpointDescription) did not answer in time\(tries): check the network and the endpoint")
        case .secureConnectionFailed, .serverCertificateUntrusted, .serverCertificateHasBadDate,
            .serverCertificateHasUnknownRoot, .serverCertificateNotYetValid, .clientCertificateRejected:
            return unusable(
                "the TLS connection to \(endpointDescription) failed (\(Self.describe(error))): check the endpoint "
                    + "URL and the system's CA certificates")
        default:
            return unusable("cannot reach \(endpointDescription)\(tries): \(Self.describe(error))")
        }
    }

    /// Network failures worth another attempt (a dropped or stalled connection, not a refused one).
    static func isTransient(_ error: URLError) -> Bool {
        [.timedOut, .networkConnectionLost, .badServerResponse, .cannotParseResponse, .resourceUnavailable]
            .contains(error.code)
    }

    /// A short description of a network error, without the request's URL.
    static func describe(_ error: URLError) -> String {
        "\(error.localizedDescription) [URLError \(error.code.rawValue)]"
    }
}
