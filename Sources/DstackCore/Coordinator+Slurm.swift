import DstackModel

extension Coordinator {
    /// Records what the batch scheduler says of the job (its Slurm id, state and pending reason) when it changed,
    /// so that `dstack status` and a later `attach` see it.
    func recordScheduler(_ job: PlannedJob, _ state: SlurmJobState) {
        guard record(job.workflow)?.slurm != state else { return }
        update(job.workflow) { $0.slurm = state }
        persistSoon()
    }
}
