internal import CLibSSH2
import Foundation

/// libssh2's process-wide initialization; a global `let` is initialized exactly once, thread-safely.
private let libssh2InitResult: Int32 = libssh2_init(0)

/// Small helpers around libssh2 that every other file uses.
enum LibSSH2 {
    /// libssh2's "would block" return code, as the Int that the read/write functions return.
    static let eagain = Int(LIBSSH2_ERROR_EAGAIN)

    /// Runs `libssh2_init` once for the process and reports whether it worked.
    static func initialize() throws(SSHError) {
        if libssh2InitResult != 0 {
            throw .libssh2(operation: "initializing libssh2", code: libssh2InitResult, message: "libssh2_init failed")
        }
    }

    /// The one place that turns a libssh2 return code into an `SSHError`, reading the session's last error message.
    static func error(_ session: OpaquePointer?, _ code: Int, _ operation: String) -> SSHError {
        var message = ""
        var reported = Int32(truncatingIfNeeded: code)
        if let session {
            var text: UnsafeMutablePointer<CChar>?
            var length: Int32 = 0
            let last = libssh2_session_last_error(session, &text, &length, 0)
            if let text, length > 0 {
                message = String(decoding: UnsafeRawBufferPointer(start: text, count: Int(length)), as: UTF8.self)
            }
            if reported == 0 || reported == -1 { reported = last }
        }
        if message.isEmpty { message = describe(reported) }
        return .libssh2(operation: operation, code: reported, message: message.lowercasedFirst)
    }

    /// Whether a libssh2 error code means the whole session is unusable (as opposed to one channel or file failing).
    static func isFatal(_ code: Int32) -> Bool {
        switch code {
        case LIBSSH2_ERROR_BANNER_RECV, LIBSSH2_ERROR_BANNER_SEND,
             LIBSSH2_ERROR_INVALID_MAC, LIBSSH2_ERROR_KEX_FAILURE, LIBSSH2_ERROR_SOCKET_SEND,
             LIBSSH2_ERROR_KEY_EXCHANGE_FAILURE, LIBSSH2_ERROR_TIMEOUT, LIBSSH2_ERROR_DECRYPT,
             LIBSSH2_ERROR_SOCKET_DISCONNECT, LIBSSH2_ERROR_PROTO, LIBSSH2_ERROR_SOCKET_TIMEOUT,
             LIBSSH2_ERROR_BAD_USE, LIBSSH2_ERROR_SOCKET_RECV, LIBSSH2_ERROR_ENCRYPT,
             LIBSSH2_ERROR_BAD_SOCKET:
            return true
        default:
            return false
        }
    }

    /// A short description of a libssh2 error code, for when libssh2 left no message.
    static func describe(_ code: Int32) -> String {
        switch code {
        case LIBSSH2_ERROR_SOCKET_DISCONNECT: return "the server closed the connection"
        case LIBSSH2_ERROR_SOCKET_RECV: return "error reading from the socket"
        case LIBSSH2_ERROR_SOCKET_SEND: return "error writing to the socket"
        case LIBSSH2_ERROR_TIMEOUT, LIBSSH2_ERROR_SOCKET_TIMEOUT: return "timed out"
        case LIBSSH2_ERROR_KEX_FAILURE, LIBSSH2_ERROR_KEY_EXCHANGE_FAILURE: return "key exchange failed"
        case LIBSSH2_ERROR_AUTHENTICATION_FAILED: return "authentication failed"
        case LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED: return "the public key was not verified"
        case LIBSSH2_ERROR_FILE: return "cannot read the key file"
        case LIBSSH2_ERROR_CHANNEL_FAILURE: return "the server refused to open a channel"
        case LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED: return "the server denied the channel request"
        case LIBSSH2_ERROR_CHANNEL_CLOSED: return "the channel is closed"
        case LIBSSH2_ERROR_SFTP_PROTOCOL: return "sftp protocol error"
        case LIBSSH2_ERROR_BAD_USE: return "libssh2 was used incorrectly (internal error)"
        default: return "libssh2 error"
        }
    }

    /// The description of an SFTP status code (`libssh2_sftp_last_error`).
    static func describeSFTP(_ status: UInt) -> String {
        switch status {
        case LIBSSH2_FX_EOF: return "end of file"
        case LIBSSH2_FX_NO_SUCH_FILE, LIBSSH2_FX_NO_SUCH_PATH: return "no such file or directory"
        case LIBSSH2_FX_PERMISSION_DENIED: return "permission denied"
        case LIBSSH2_FX_FAILURE: return "the server reported a failure"
        case LIBSSH2_FX_FILE_ALREADY_EXISTS: return "file already exists"
        case LIBSSH2_FX_WRITE_PROTECT: return "write protected"
        case LIBSSH2_FX_NO_SPACE_ON_FILESYSTEM, LIBSSH2_FX_QUOTA_EXCEEDED: return "no space left on the remote file system"
        case LIBSSH2_FX_NOT_A_DIRECTORY: return "not a directory"
        case LIBSSH2_FX_NO_MEDIA: return "no media"
        default: return "sftp status \(status)"
        }
    }
}

extension String {
    /// The string with its first character lowercased, for libssh2 messages that start with a capital.
    var lowercasedFirst: String {
        guard let first else { return self }
        return first.lowercased() + dropFirst()
    }
}

/// The text of the C `errno` value `code`.
func errnoDescription(_ code: Int32) -> String {
    String(cString: strerror(code)).lowercasedFirst
}
