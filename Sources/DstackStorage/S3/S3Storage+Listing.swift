import Crypto
import Foundation

extension S3Storage {
    /// Calls `body` with each page of ListObjectsV2 under `prefix`, following continuation tokens.
    func listPages(prefix: String, delimiter: String?, _ body: (S3XMLElement) throws -> Void) async throws {
        var token: String?
        repeat {
            var query: [(name: String, value: String)] = [("list-type", "2"), ("prefix", prefix)]
            if let delimiter { query.append(("delimiter", delimiter)) }
            if let token { query.append(("continuation-token", token)) }
            let response = try await client.send(S3Request(method: "GET", key: nil, query: query))
            guard let page = S3XMLElement.parse(response.body), page.name == "ListBucketResult" else {
                throw client.unusable("listing \(client.describe(nil)) returned something that is not a listing")
            }
            try body(page)
            token = page.text(of: "IsTruncated") == "true" ? page.text(of: "NextContinuationToken") : nil
        } while token != nil
    }

    /// Whether an object exists, by reading at most its first byte (a GET, unlike HEAD, explains its errors).
    func exists(_ fullKey: String) async throws -> Bool {
        let response = try await client.send(
            S3Request(method: "GET", key: fullKey, headers: [("Range", "bytes=0-0")]),
            accepting: ["NoSuchKey", "InvalidRange"])
        return response.isSuccess || S3ErrorInfo(response).code == "InvalidRange"
    }

    /// Deletes up to 1,000 bucket keys with one DeleteObjects request.
    func deleteObjects(_ fullKeys: [String]) async throws {
        let objects = fullKeys.map { "<Object><Key>\(S3XMLElement.escape($0))</Key></Object>" }.joined()
        let document = Data(
            ("<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>\(objects)</Delete>").utf8)
        let response = try await client.send(
            S3Request(
                method: "POST", key: nil, query: [("delete", "")],
                headers: [
                    ("Content-MD5", Data(Insecure.MD5.hash(data: document)).base64EncodedString()),
                    ("Content-Type", "application/xml"),
                ],
                body: .data(document)),
            accepting: ["NotImplemented"])
        guard response.isSuccess else {
            // Servers without DeleteObjects: one request per key.
            for key in fullKeys {
                _ = try await client.send(S3Request(method: "DELETE", key: key), accepting: ["NoSuchKey"])
            }
            return
        }
        let failed = S3XMLElement.parse(response.body)?.children("Error") ?? []
        if let first = failed.first {
            throw client.unusable(
                "could not delete \(failed.count) object(s), first '\(first.text(of: "Key") ?? "?")': "
                    + "\(first.text(of: "Code") ?? "") \(first.text(of: "Message") ?? "")")
        }
    }
}
