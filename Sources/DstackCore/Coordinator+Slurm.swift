import DstackModel

extension Coordinator {
    /// Records what the batch scheduler says of the job (its Slurm id, state and pending reason) when it changed,
    /// so that `dstack status` and a later `attach` see it.
    func recordScheduler(_ job: PlannedJob, _ state: SlurmJobState) {
        let was = record(job.workflow)?.slurm
        guard was != state else { return }
        update(job.workflow) { $0.slurm = state }
        if state.state == "PENDING", let reason = state.reason, was?.reason != reason || was?.id != state.id {
            sink.emit(.notice("[\(job.workflow)] Slurm job \(state.id) pending (\(reason))"))
        }
        persistSoon()
    }
}
