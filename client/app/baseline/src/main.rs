//! An empty Tauri app: one window with a one-line page. The desktop app's memory is measured
//! next to this one (`client/app/measure-memory.sh`).

fn main() {
    if let Err(e) = tauri::Builder::default().run(tauri::generate_context!()) {
        eprintln!("the baseline app could not start: {e}");
        std::process::exit(1);
    }
}
