from zcraq.cli import main

main()
