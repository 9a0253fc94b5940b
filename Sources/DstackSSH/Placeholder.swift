// The SSH module arrives in a following commit.
