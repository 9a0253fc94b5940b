import DstackCLI

@main
struct Entrypoint {
    static func main() async {
        await DstackCommand.main()
    }
}
