from cleanup_worker.cli import main

main()
