/// Run names in the `adjective-animal-N` form (`grumpy-zebra-1`).
public enum RunNames {
    static let adjectives = ["brave", "calm", "clever", "cosy", "eager", "fancy", "gentle", "grumpy", "happy", "jolly",
                             "keen", "lucky", "mighty", "nimble", "plucky", "quiet", "rapid", "shiny", "silly", "sleepy",
                             "smart", "snappy", "steady", "swift", "tidy", "witty", "zesty", "bold", "bright", "cheeky"]
    static let animals = ["otter", "zebra", "panda", "lynx", "heron", "koala", "lemur", "llama", "moose", "newt",
                          "owl", "puffin", "quokka", "raven", "seal", "tapir", "walrus", "yak", "badger", "bison",
                          "crane", "dingo", "eagle", "ferret", "gecko", "ibis", "jackal", "marmot", "ocelot", "wombat"]

    /// A random `adjective-animal` stem; the caller appends `-N`, choosing N by atomic creation.
    public static func stem<G: RandomNumberGenerator>(using generator: inout G) -> String {
        "\(adjectives.randomElement(using: &generator)!)-\(animals.randomElement(using: &generator)!)"
    }

    /// True for a name of this form, so `dstack` can tell a run name from other arguments.
    public static func looksLikeRunName(_ text: String) -> Bool {
        let parts = text.split(separator: "-")
        return parts.count == 3 && Int(parts[2]) != nil
    }
}
