//! One operation over many instances at once: most of an instance operation waits (for its
//! lock, its supervisor's answer, the disk), so a verb over many instances overlaps them.

/// `work` applied to every item, up to `limit` items at a time on scoped threads whose events
/// are attributed as this thread's; the results come back in the items' order.
pub(crate) fn map<T: Sync, R: Send>(
    items: &[T],
    limit: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..limit.clamp(1, items.len().max(1)))
            .map(|_| {
                scope.spawn(crate::events::as_this_thread(|| {
                    let mut done = Vec::new();
                    loop {
                        let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(index) else {
                            break done;
                        };
                        done.push((index, work(item)));
                    }
                }))
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_worked_once_and_the_results_keep_their_order() {
        let items: Vec<u32> = (0..50).collect();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let results = map(&items, 7, |item| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            item * 2
        });
        assert_eq!(results, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(calls.into_inner(), 50);
        assert!(map(&[] as &[u32], 4, |i| *i).is_empty());
    }

    #[test]
    fn items_are_worked_on_together_up_to_the_limit() {
        let running = std::sync::atomic::AtomicUsize::new(0);
        let most = std::sync::atomic::AtomicUsize::new(0);
        let items = [(); 12];
        map(&items, 4, |_| {
            let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(30));
            running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        });
        let most = most.into_inner();
        assert!(
            most > 1 && most <= 4,
            "at most 4 at once, and more than one: {most}"
        );
    }
}
